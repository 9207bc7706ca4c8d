# syntax=docker/dockerfile:1
# Firma Sidecar image. Multi-stage: the TypeScript build never reaches the runtime image.
#
#   docker build -t firma-sidecar .                              # the sidecar (default target)
#   docker build --target iptables-init -t firma-iptables-init . # the Kubernetes init container (deploy/k8s)
#   docker run --rm firma-sidecar                                # shipped firma.toml (container loopback)
#   docker run --rm -v "$PWD/my:/etc/firma:ro" firma-sidecar start --config /etc/firma/firma.toml
#
# The sidecar runs as UID 1337 (user "firma"); deploy/k8s exempts exactly that UID from the iptables
# redirect, so the two must stay equal (test/e2e/deploy.test.ts checks it).
ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile TypeScript ------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" runs tsc, and the sources are not here yet (copied below, so the dependency
# layer is cached across source changes).
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# --- deps: production dependencies only ---------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" would need tsc, a dev dependency; no production dependency has an install script.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force

# --- iptables-init: the Kubernetes init container that installs the redirect --------------------------
FROM debian:bookworm-slim AS iptables-init
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/k8s/firma-iptables.sh /usr/local/bin/firma-iptables
ENTRYPOINT ["/usr/local/bin/firma-iptables"]

# --- runtime: the sidecar -----------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM/SIGINT to node (which drains in-flight requests, drain_timeout_ms) and
# reaps zombies. `docker run --init` would do the same; with tini in the image it is not needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
# The sidecar's own user. UID 1337 is the UID the Kubernetes iptables rules exempt (the Istio convention).
RUN groupadd --gid 1337 firma && useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin firma
WORKDIR /app
ENV NODE_ENV=production
# glibc: a fixed mmap threshold, so freed large blocks are returned to the kernel (README "Runtime settings").
ENV MALLOC_MMAP_THRESHOLD_=131072
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json firma.toml firma.schema.json ./
COPY mappings ./mappings
COPY policies ./policies
COPY prices ./prices
# Everything above is root-owned and read-only to the sidecar. The only writable places: the CA, keys and
# audit folders of the shipped firma.toml (relative to /app) and of deployments (/var/lib/firma, where
# named volumes and emptyDirs are mounted; a named volume takes this ownership when first created).
RUN mkdir -p /app/certs /app/keys /app/audit /var/lib/firma/certs /var/lib/firma/keys /var/lib/firma/audit /var/lib/firma/public \
 && chown -R 1337:1337 /app/certs /app/keys /app/audit /var/lib/firma \
 && chmod 0700 /app/certs /app/keys /var/lib/firma/certs /var/lib/firma/keys \
 && ln -s /app/dist/cli/firma.js /usr/local/bin/firma \
 && chmod 0755 /app/dist/cli/firma.js
USER 1337:1337
# 8080 proxy (explicit HTTP(S)_PROXY), 15001 transparent listener (iptables REDIRECT), 9090 admin.
EXPOSE 8080 15001 9090
# No curl in slim images: node itself probes /healthz. FIRMA_HEALTH_URL follows a config whose admin
# listener is elsewhere.
ENV FIRMA_HEALTH_URL=http://127.0.0.1:9090/healthz
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.FIRMA_HEALTH_URL,{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/cli/firma.js"]
CMD ["start", "--config", "/app/firma.toml"]
