import { test } from "node:test";
import assert from "node:assert/strict";
import { parse, parseAll, mapField, NOT_PRESENT, present, type Adaptor } from "#libs/filters";

const obj: Adaptor = (fp) => {
  const labels: Record<string, string> = { "com.example/x": "y", foo: "bar", empty: "" };
  switch (fp[0]) {
    case "name": return present("docker.io/library/busybox:latest");
    case "topic": return present("/tasks/exit");
    case "labels": return mapField(labels, fp.slice(1));
    default: return NOT_PRESENT;
  }
};

test("empty filter matches everything", () => {
  assert.equal(parse("").match(obj), true);
  assert.equal(parseAll([""]).match(obj), true);
  assert.equal(parseAll([]).match(obj), true);
});

test("equality, inequality, presence and regex", () => {
  assert.equal(parse("name==docker.io/library/busybox:latest").match(obj), true);
  assert.equal(parse("name!=docker.io/library/busybox:latest").match(obj), false);
  assert.equal(parse("labels.foo").match(obj), true);
  assert.equal(parse("labels.missing").match(obj), false);
  assert.equal(parse("labels.missing!=x").match(obj), true, "!= is true for an absent field, as in containerd");
  assert.equal(parse("name~=busybox").match(obj), true);
  assert.equal(parse("name~=^alpine").match(obj), false);
});

test("quoted field paths and values, and regex quoting with slashes", () => {
  assert.equal(parse('labels."com.example/x"==y').match(obj), true);
  assert.equal(parse('labels."com.example/x"=="y"').match(obj), true);
  assert.equal(parse("topic~=/^\\/tasks\\//").match(obj), true);
  assert.equal(parse('topic=="/tasks/exit"').match(obj), true);
});

test("commas are AND, several strings are OR", () => {
  assert.equal(parse("labels.foo==bar,name~=alpine").match(obj), false);
  assert.equal(parse("labels.foo==bar,name~=busybox").match(obj), true);
  assert.equal(parseAll(["name~=alpine", "labels.foo==bar"]).match(obj), true);
});

test("syntax errors are InvalidArgument", () => {
  for (const bad of ["==x", "name==", "name==a,", "labels.\"unterminated", "name~=(", "a b"]) {
    assert.throws(() => parse(bad), (e: { code?: string }) => e.code === "invalid argument", bad);
  }
});
