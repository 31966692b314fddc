# syntax=docker/dockerfile:1
#
# The image of one concord node: `concord node` behind tini (PID 1 forwards signals and reaps
# exited children), as the unprivileged user `node`, answering its health check on /readyz.
#
#   docker build -t concord-cluster .
#   docker run --rm -e CONCORD_SECRET="$(openssl rand -hex 24)" \
#     -e CONCORD_STORE=postgres://app:pw@db:5432/app -p 8080:8080 concord-cluster
#
# Every replica names itself after its hostname and advertises its own IP address unless
# CONCORD_NODE_NAME / CONCORD_ADVERTISE_HOST say otherwise (deploy/docker-entrypoint.sh), so the
# replicas of one store find each other with no list of peers. Extra arguments go to
# `concord node` (e.g. `--log-level debug`); change the HTTP port with CONCORD_HTTP_PORT, not a
# flag (the health check reads it). See docker-compose.yml and deploy/kubernetes/.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile TypeScript, install production dependencies -------------------------------
FROM ${NODE_IMAGE} AS build
# better-sqlite3 compiles its binding from source where no prebuilt one fits the platform.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm install --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src src
COPY examples examples
COPY bench bench
RUN npm rebuild \
  && npm run build \
  && npm prune --omit=dev --no-audit --no-fund

# ---- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    CONCORD_HOST=0.0.0.0 \
    CONCORD_HTTP_PORT=8080 \
    CONCORD_CLUSTER_PORT=7946
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
COPY deploy/docker-entrypoint.sh /usr/local/bin/concord-entrypoint
RUN chmod 755 /usr/local/bin/concord-entrypoint dist/src/cli/main.js \
  && ln -s /app/dist/src/cli/main.js /usr/local/bin/concord \
  && mkdir /data && chown node:node /data
# A SQLite store (the default, sqlite:./.concord/concord.db) would live here; use PostgreSQL
# (CONCORD_STORE) for replicas on more than one machine.
WORKDIR /data
USER node
EXPOSE 8080 7946
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.CONCORD_HTTP_PORT}/readyz`).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop) is a graceful stop: the node hands its shards over and exits, within
# 20 s at most; give it that long (docker stop -t 25, compose's stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "concord-entrypoint", "node"]
