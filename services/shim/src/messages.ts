/**
 * The messages the shim speaks, as tables for ./pb.ts, mirroring proto/containerd/runtime/task/v2
 * (identical in v3), proto/containerd/events/task.proto, proto/containerd/types/*.proto,
 * proto/containerd/runc/options.proto, proto/containerd/runtime/sandbox/v1 and the cgroups metrics protos. Field numbers are the wire
 * contract; test/tasks/shim-codec.test.ts compares every table with protobufjs.
 */
import { msg, type Schema } from "./pb";

export const Any = msg("google.protobuf.Any", [[1, "type_url", "string"], [2, "value", "bytes"]]);
export const Timestamp = msg("google.protobuf.Timestamp", [[1, "seconds", "int64"], [2, "nanos", "int32"]]);
export const Empty = msg("google.protobuf.Empty", []);
export const Mount = msg("containerd.types.Mount", [[1, "type", "string"], [2, "source", "string"], [3, "target", "string"], [4, "options", "string", "repeated"]]);

const T = "containerd.task.v2.";
export const CreateTaskRequest = msg(T + "CreateTaskRequest", [
  [1, "id", "string"], [2, "bundle", "string"], [3, "rootfs", Mount, "repeated"], [4, "terminal", "bool"],
  [5, "stdin", "string"], [6, "stdout", "string"], [7, "stderr", "string"], [8, "checkpoint", "string"],
  [9, "parent_checkpoint", "string"], [10, "options", Any],
]);
export const CreateTaskResponse = msg(T + "CreateTaskResponse", [[1, "pid", "uint32"]]);
export const DeleteRequest = msg(T + "DeleteRequest", [[1, "id", "string"], [2, "exec_id", "string"]]);
export const DeleteResponse = msg(T + "DeleteResponse", [[1, "pid", "uint32"], [2, "exit_status", "uint32"], [3, "exited_at", Timestamp]]);
export const ExecProcessRequest = msg(T + "ExecProcessRequest", [
  [1, "id", "string"], [2, "exec_id", "string"], [3, "terminal", "bool"], [4, "stdin", "string"],
  [5, "stdout", "string"], [6, "stderr", "string"], [7, "spec", Any],
]);
export const ResizePtyRequest = msg(T + "ResizePtyRequest", [[1, "id", "string"], [2, "exec_id", "string"], [3, "width", "uint32"], [4, "height", "uint32"]]);
export const StateRequest = msg(T + "StateRequest", [[1, "id", "string"], [2, "exec_id", "string"]]);
export const StateResponse = msg(T + "StateResponse", [
  [1, "id", "string"], [2, "bundle", "string"], [3, "pid", "uint32"], [4, "status", "enum"], [5, "stdin", "string"],
  [6, "stdout", "string"], [7, "stderr", "string"], [8, "terminal", "bool"], [9, "exit_status", "uint32"],
  [10, "exited_at", Timestamp], [11, "exec_id", "string"],
]);
export const KillRequest = msg(T + "KillRequest", [[1, "id", "string"], [2, "exec_id", "string"], [3, "signal", "uint32"], [4, "all", "bool"]]);
export const CloseIORequest = msg(T + "CloseIORequest", [[1, "id", "string"], [2, "exec_id", "string"], [3, "stdin", "bool"]]);
export const PidsRequest = msg(T + "PidsRequest", [[1, "id", "string"]]);
export const ProcessInfo = msg("containerd.v1.types.ProcessInfo", [[1, "pid", "uint32"], [2, "info", Any]]);
export const PidsResponse = msg(T + "PidsResponse", [[1, "processes", ProcessInfo, "repeated"]]);
export const CheckpointTaskRequest = msg(T + "CheckpointTaskRequest", [[1, "id", "string"], [2, "path", "string"], [3, "options", Any]]);
export const UpdateTaskRequest = msg(T + "UpdateTaskRequest", [[1, "id", "string"], [2, "resources", Any], [3, "annotations", "string", "map"]]);
export const StartRequest = msg(T + "StartRequest", [[1, "id", "string"], [2, "exec_id", "string"]]);
export const StartResponse = msg(T + "StartResponse", [[1, "pid", "uint32"]]);
export const WaitRequest = msg(T + "WaitRequest", [[1, "id", "string"], [2, "exec_id", "string"]]);
export const WaitResponse = msg(T + "WaitResponse", [[1, "exit_status", "uint32"], [2, "exited_at", Timestamp]]);
export const StatsRequest = msg(T + "StatsRequest", [[1, "id", "string"]]);
export const StatsResponse = msg(T + "StatsResponse", [[1, "stats", Any]]);
export const ConnectRequest = msg(T + "ConnectRequest", [[1, "id", "string"]]);
export const ConnectResponse = msg(T + "ConnectResponse", [[1, "shim_pid", "uint32"], [2, "task_pid", "uint32"], [3, "version", "string"]]);
export const ShutdownRequest = msg(T + "ShutdownRequest", [[1, "id", "string"], [2, "now", "bool"]]);
export const PauseRequest = msg(T + "PauseRequest", [[1, "id", "string"]]);
export const ResumeRequest = msg(T + "ResumeRequest", [[1, "id", "string"]]);

const E = "containerd.events.";
export const TaskIO = msg(E + "TaskIO", [[1, "stdin", "string"], [2, "stdout", "string"], [3, "stderr", "string"], [4, "terminal", "bool"]]);
export const TaskCreate = msg(E + "TaskCreate", [
  [1, "container_id", "string"], [2, "bundle", "string"], [3, "rootfs", Mount, "repeated"], [4, "io", TaskIO],
  [5, "checkpoint", "string"], [6, "pid", "uint32"],
]);
export const TaskStart = msg(E + "TaskStart", [[1, "container_id", "string"], [2, "pid", "uint32"]]);
export const TaskDelete = msg(E + "TaskDelete", [[1, "container_id", "string"], [2, "pid", "uint32"], [3, "exit_status", "uint32"], [4, "exited_at", Timestamp], [5, "id", "string"]]);
export const TaskExit = msg(E + "TaskExit", [[1, "container_id", "string"], [2, "id", "string"], [3, "pid", "uint32"], [4, "exit_status", "uint32"], [5, "exited_at", Timestamp]]);
export const TaskOOM = msg(E + "TaskOOM", [[1, "container_id", "string"]]);
export const TaskExecAdded = msg(E + "TaskExecAdded", [[1, "container_id", "string"], [2, "exec_id", "string"]]);
export const TaskExecStarted = msg(E + "TaskExecStarted", [[1, "container_id", "string"], [2, "exec_id", "string"], [3, "pid", "uint32"]]);
export const TaskPaused = msg(E + "TaskPaused", [[1, "container_id", "string"]]);
export const TaskResumed = msg(E + "TaskResumed", [[1, "container_id", "string"]]);
export const TaskCheckpointed = msg(E + "TaskCheckpointed", [[1, "container_id", "string"], [2, "checkpoint", "string"]]);

export const Envelope = msg("containerd.types.Envelope", [[1, "timestamp", Timestamp], [2, "namespace", "string"], [3, "topic", "string"], [4, "event", Any]]);
export const ForwardRequest = msg("containerd.services.events.ttrpc.v1.ForwardRequest", [[1, "envelope", Envelope]]);

export const RuncOptions = msg("containerd.runc.v1.Options", [
  [1, "no_pivot_root", "bool"], [2, "no_new_keyring", "bool"], [3, "shim_cgroup", "string"], [4, "io_uid", "uint32"],
  [5, "io_gid", "uint32"], [6, "binary_name", "string"], [7, "root", "string"], [8, "criu_path", "string"],
  [9, "systemd_cgroup", "bool"], [10, "criu_image_path", "string"], [11, "criu_work_path", "string"],
  [12, "task_api_address", "string"], [13, "task_api_version", "uint32"],
]);
export const CheckpointOptions = msg("containerd.runc.v1.CheckpointOptions", [
  [1, "exit", "bool"], [2, "open_tcp", "bool"], [3, "external_unix_sockets", "bool"], [4, "terminal", "bool"],
  [5, "file_locks", "bool"], [6, "empty_namespaces", "string", "repeated"], [7, "cgroups_mode", "string"],
  [8, "image_path", "string"], [9, "work_path", "string"], [10, "parent_path", "string"],
]);
export const ProcessDetails = msg("containerd.runc.v1.ProcessDetails", [[1, "exec_id", "string"]]);

// io.containerd.cgroups.v1
const C1 = "io.containerd.cgroups.v1.";
const u64 = (names: string[], from = 1): [number, string, "uint64"][] => names.map((n, i) => [from + i, n, "uint64"]);
const V1HugetlbStat = msg(C1 + "HugetlbStat", [...u64(["usage", "max", "failcnt"]), [4, "pagesize", "string"]]);
const V1PidsStat = msg(C1 + "PidsStat", u64(["current", "limit"]));
const V1CPUUsage = msg(C1 + "CPUUsage", [...u64(["total", "kernel", "user"]), [4, "per_cpu", "uint64", "repeated"]]);
const V1Throttle = msg(C1 + "Throttle", u64(["periods", "throttled_periods", "throttled_time"]));
const V1CPUStat = msg(C1 + "CPUStat", [[1, "usage", V1CPUUsage], [2, "throttling", V1Throttle]]);
const V1MemoryEntry = msg(C1 + "MemoryEntry", u64(["limit", "usage", "max", "failcnt"]));
const V1MemoryStat = msg(C1 + "MemoryStat", [
  ...u64([
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pg_pg_in", "pg_pg_out", "pg_fault", "pg_maj_fault",
    "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable", "hierarchical_memory_limit",
    "hierarchical_swap_limit", "total_cache", "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty",
    "total_writeback", "total_pg_pg_in", "total_pg_pg_out", "total_pg_fault", "total_pg_maj_fault", "total_inactive_anon",
    "total_active_anon", "total_inactive_file", "total_active_file", "total_unevictable",
  ]),
  [33, "usage", V1MemoryEntry], [34, "swap", V1MemoryEntry], [35, "kernel", V1MemoryEntry], [36, "kernel_tcp", V1MemoryEntry],
]);
const V1MemoryOomControl = msg(C1 + "MemoryOomControl", u64(["oom_kill_disable", "under_oom", "oom_kill"]));
const V1BlkIOEntry = msg(C1 + "BlkIOEntry", [[1, "op", "string"], [2, "device", "string"], ...u64(["major", "minor", "value"], 3)]);
const V1BlkIOStat = msg(C1 + "BlkIOStat", [
  "io_service_bytes_recursive", "io_serviced_recursive", "io_queued_recursive", "io_service_time_recursive",
  "io_wait_time_recursive", "io_merged_recursive", "io_time_recursive", "sectors_recursive",
].map((n, i) => [i + 1, n, V1BlkIOEntry, "repeated"] as [number, string, Schema, "repeated"]));
const V1CgroupStats = msg(C1 + "CgroupStats", u64(["nr_sleeping", "nr_running", "nr_stopped", "nr_uninterruptible", "nr_io_wait"]));
export const MetricsV1 = msg(C1 + "Metrics", [
  [1, "hugetlb", V1HugetlbStat, "repeated"], [2, "pids", V1PidsStat], [3, "cpu", V1CPUStat], [4, "memory", V1MemoryStat],
  [5, "blkio", V1BlkIOStat], [8, "cgroup_stats", V1CgroupStats], [9, "memory_oom_control", V1MemoryOomControl],
]);

// io.containerd.cgroups.v2
const C2 = "io.containerd.cgroups.v2.";
const V2PidsStat = msg(C2 + "PidsStat", u64(["current", "limit"]));
const V2CPUStat = msg(C2 + "CPUStat", [...u64(["usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec"]), ...u64(["nr_bursts", "burst_usec"], 8)]);
const V2MemoryStat = msg(C2 + "MemoryStat", [
  ...u64([
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback", "anon_thp",
    "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable",
    "pgfault", "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan",
    "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc", "usage",
    "usage_limit", "swap_usage", "swap_limit", "max_usage", "swap_max_usage",
  ]),
  ...u64(["workingset_refault_anon", "workingset_refault_file", "workingset_activate_anon", "workingset_activate_file"], 39),
]);
const V2IOEntry = msg(C2 + "IOEntry", u64(["major", "minor", "rbytes", "wbytes", "rios", "wios"]));
const V2IOStat = msg(C2 + "IOStat", [[1, "usage", V2IOEntry, "repeated"]]);
const V2HugeTlbStat = msg(C2 + "HugeTlbStat", [...u64(["current", "max"]), [3, "pagesize", "string"], [4, "failcnt", "uint64"]]);
const V2MemoryEvents = msg(C2 + "MemoryEvents", u64(["low", "high", "max", "oom", "oom_kill", "oom_group_kill"]));
export const MetricsV2 = msg(C2 + "Metrics", [
  [1, "pids", V2PidsStat], [2, "cpu", V2CPUStat], [4, "memory", V2MemoryStat], [6, "io", V2IOStat],
  [7, "hugetlb", V2HugeTlbStat, "repeated"], [8, "memory_events", V2MemoryEvents],
]);

// containerd.runtime.sandbox.v1 (the shim-level sandbox API)
const S = "containerd.runtime.sandbox.v1.";
const sandboxId: [number, string, "string"] = [1, "sandbox_id", "string"];
export const Platform = msg("containerd.types.Platform", [[1, "os", "string"], [2, "architecture", "string"], [3, "variant", "string"], [4, "os_version", "string"], [5, "os_features", "string", "repeated"]]);
export const Metric = msg("containerd.types.Metric", [[1, "timestamp", Timestamp], [2, "id", "string"], [3, "data", Any]]);
export const CreateSandboxRequest = msg(S + "CreateSandboxRequest", [
  sandboxId, [2, "bundle_path", "string"], [3, "rootfs", Mount, "repeated"], [4, "options", Any], [5, "netns_path", "string"], [6, "annotations", "string", "map"],
]);
export const CreateSandboxResponse = msg(S + "CreateSandboxResponse", []);
export const StartSandboxRequest = msg(S + "StartSandboxRequest", [sandboxId]);
export const StartSandboxResponse = msg(S + "StartSandboxResponse", [[1, "pid", "uint32"], [2, "created_at", Timestamp], [3, "spec", Any]]);
export const PlatformRequest = msg(S + "PlatformRequest", [sandboxId]);
export const PlatformResponse = msg(S + "PlatformResponse", [[1, "platform", Platform]]);
export const StopSandboxRequest = msg(S + "StopSandboxRequest", [sandboxId, [2, "timeout_secs", "uint32"]]);
export const StopSandboxResponse = msg(S + "StopSandboxResponse", []);
export const WaitSandboxRequest = msg(S + "WaitSandboxRequest", [sandboxId]);
export const WaitSandboxResponse = msg(S + "WaitSandboxResponse", [[1, "exit_status", "uint32"], [2, "exited_at", Timestamp]]);
export const SandboxStatusRequest = msg(S + "SandboxStatusRequest", [sandboxId, [2, "verbose", "bool"]]);
export const SandboxStatusResponse = msg(S + "SandboxStatusResponse", [
  sandboxId, [2, "pid", "uint32"], [3, "state", "string"], [4, "info", "string", "map"], [5, "created_at", Timestamp], [6, "exited_at", Timestamp], [7, "extra", Any],
]);
export const PingRequest = msg(S + "PingRequest", [sandboxId]);
export const PingResponse = msg(S + "PingResponse", []);
export const ShutdownSandboxRequest = msg(S + "ShutdownSandboxRequest", [sandboxId]);
export const ShutdownSandboxResponse = msg(S + "ShutdownSandboxResponse", []);
export const SandboxMetricsRequest = msg(S + "SandboxMetricsRequest", [sandboxId]);
export const SandboxMetricsResponse = msg(S + "SandboxMetricsResponse", [[1, "metrics", Metric]]);

/** Every table by proto full name (for the codec test). */
export const ALL: Schema[] = [
  Any, Timestamp, Mount, CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest,
  ResizePtyRequest, StateRequest, StateResponse, KillRequest, CloseIORequest, PidsRequest, PidsResponse,
  CheckpointTaskRequest, UpdateTaskRequest, StartRequest, StartResponse, WaitRequest, WaitResponse, StatsRequest,
  StatsResponse, ConnectRequest, ConnectResponse, ShutdownRequest, PauseRequest, ResumeRequest, TaskIO, TaskCreate,
  TaskStart, TaskDelete, TaskExit, TaskOOM, TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed, TaskCheckpointed,
  Envelope, ForwardRequest, RuncOptions, CheckpointOptions, ProcessDetails, MetricsV1, MetricsV2,
  Platform, Metric, CreateSandboxRequest, CreateSandboxResponse, StartSandboxRequest, StartSandboxResponse, PlatformRequest,
  PlatformResponse, StopSandboxRequest, StopSandboxResponse, WaitSandboxRequest, WaitSandboxResponse, SandboxStatusRequest,
  SandboxStatusResponse, PingRequest, PingResponse, ShutdownSandboxRequest, ShutdownSandboxResponse, SandboxMetricsRequest,
  SandboxMetricsResponse,
];
