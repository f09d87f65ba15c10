# Development image for docker-compose.dev.yml: one image, one process per container.
FROM node:20-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends runc crun containernetworking-plugins iproute2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/flotilla
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build
ENTRYPOINT ["node"]
