export const MAIN_USAGE = `hako: run AI agent sessions in real sandboxes

usage: hako <command> [flags]

commands:
  sandbox run     run a command in a fresh sandbox (hako sandbox run --help)
  image import    import an OCI image layout tar into the image store
  image list      list images
  image rm        remove an image
  agent           run hakod, the node agent (gRPC API over mTLS) in the foreground
  certs init      write a CA and mTLS certificates for hakod and its clients (--dir DIR)
  gc              remove what dead sandboxes left behind (--dry-run to only list)
  doctor          check every host prerequisite and print the fix for what is missing
  version         print the version

Configuration comes from the environment: see docs/configuration.md.
`;

export const SANDBOX_RUN_USAGE = `usage: hako sandbox run [flags] -- CMD [ARGS...]

Runs CMD in a fresh sandbox with cwd /workspace and exits with CMD's exit code
(137 when a limit killed it, 124 on timeout, 2 on bad flags).

flags:
  --workspace DIR        host directory to use as /workspace (copied in, mirrored back); default: a fresh empty one
  --image host|NAME      root filesystem: the built-in 'host' image (default) or an imported OCI image
  --runtime crun|runc|runsc   OCI runtime (default: HAKO_RUNTIME, else the first that works on this host)
  --memory SIZE          memory limit, swap included (default 512m)
  --cpus N               CPU quota in cores (default 1)
  --pids N               process and thread limit (default 256)
  --disk SIZE            /workspace quota (default 1g)
  --tmp SIZE             size of /tmp, /var/tmp, /dev/shm and HOME each (default 64m)
  --network none|egress  none: loopback only (default); egress: only through the egress proxy
  --allow HOST:PORT      egress allowlist entry, repeatable (*.example.com:443, 127.0.0.1:8080)
  --env K=V              environment variable, repeatable
  --timeout DURATION     kill the sandbox after this long (default 10m)
  -h, --help             this help
`;
