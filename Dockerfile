# One image for every subcommand: `operator`, `kms serve` (and later `agent`).
#   docker build -t datakey-operator .            (official Node 20 base)
#   npm run image:build                           (builds this file with buildah
#                                                  on a local base; docs/image.md)
ARG BASE=node:20-bookworm-slim

# Compiles the TypeScript with the full (dev) dependency set.
FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Production dependencies only, without npm's cache.
FROM ${BASE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${BASE}
WORKDIR /app
ENV NODE_ENV=production
COPY package.json ./
COPY crds ./crds
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Numeric, so `runAsNonRoot` can verify it; everything above stays root-owned
# and read-only for it: the image runs with a read-only root filesystem.
USER 65532:65532
# node is PID 1 and the CLI stops cleanly on SIGTERM. A young generation of 2 MiB
# semi-spaces instead of V8's 16: about 30 MB less peak RSS for the operator, for
# a little more GC time (docs/operator.md, "Memory"). bench:operator runs these flags.
ENTRYPOINT ["node", "--max-semi-space-size=2", "dist/cli.js"]
CMD ["--help"]
