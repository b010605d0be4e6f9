export const MAIN_USAGE = `hako: run AI agent sessions in real sandboxes

usage: hako <command> [flags]

commands:
  up                    run hako-api and hakod together on this machine (embedded defaults)
  demo                  start the stack, run an agent session, show its events and files, stop
  tenants create NAME   create a tenant (admin: HAKO_ADMIN_TOKEN)
  tenants get ID        show a tenant and its settings (admin)
  keys create TENANT    create an API key for a tenant; shown once (admin)
  conversations list    list your tenant's conversations (HAKO_API_KEY)
  conversations create  create a conversation (HAKO_API_KEY)
  exec CONV "PROMPT"    run the agent on a prompt and stream its events (HAKO_API_KEY)
  sandboxes list        list hakod's sandboxes of an owner (--owner TENANT_ID)
  sandbox run           run a command in a fresh sandbox (hako sandbox run --help)
  image pull            pull an image from an OCI registry (progress on a terminal)
  image import          import an OCI image layout tar into the image store
  image list            list images
  image rm              remove an image
  agent                 run hakod, the node agent (gRPC API over mTLS) in the foreground
  certs init            write a CA and mTLS certificates for hakod and its clients (--dir DIR)
  gc                    remove what dead sandboxes left behind (--dry-run to only list)
  doctor                check every host prerequisite and print the fix for what is missing
  version               print the version

Every command takes --help. Commands that talk to hako-api read HAKO_API_URL
(default http://127.0.0.1:8080), HAKO_ADMIN_TOKEN (admin commands) and HAKO_API_KEY
(tenant commands). Output is plain text without colors when it is not a terminal;
--json prints what a program reads. Exit codes: 0 done, 1 failed (the error's code
is printed as hako: [CODE] ...), 2 bad usage.

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

const API_ENV = `environment:
  HAKO_API_URL       hako-api's URL (default http://127.0.0.1:8080)
  HAKO_ADMIN_TOKEN   the admin token (admin commands: tenants, keys)
  HAKO_API_KEY       a tenant's API key (tenant commands: conversations, exec)
`;

export const TENANTS_USAGE = `usage: hako tenants create NAME [--settings JSON|@FILE] [--json]
       hako tenants get ID [--json]

Admin commands (HAKO_ADMIN_TOKEN).
  create   creates a tenant; prints its id. --settings takes the tenant's settings as JSON,
           or @FILE to read them from a file, e.g. '{"limits":{"requests_per_minute":120}}'
           (every field left out takes its default; see docs/http-api.md)
  get      shows a tenant and its settings

flags:
  --settings JSON|@FILE  settings of the new tenant (create only)
  --json                 print the tenant as one JSON object
  -h, --help             this help

${API_ENV}`;

export const TENANTS_CREATE_USAGE = `usage: hako tenants create NAME [--settings JSON|@FILE] [--json]

Creates a tenant named NAME (admin: HAKO_ADMIN_TOKEN) and prints its id; then
\`hako keys create ID\` makes an API key for it.

flags:
  --settings JSON|@FILE  the tenant's settings as JSON, or @FILE to read them from a file;
                         fields left out take their defaults (see docs/http-api.md)
  --json                 print the tenant as one JSON object
  -h, --help             this help

${API_ENV}`;

export const TENANTS_GET_USAGE = `usage: hako tenants get ID [--json]

Shows the tenant ID and its settings (admin: HAKO_ADMIN_TOKEN).

flags:
  --json       print the tenant as one JSON object
  -h, --help   this help

${API_ENV}`;

export const KEYS_USAGE = `usage: hako keys create TENANT_ID [--json]

Creates an API key for the tenant (admin: HAKO_ADMIN_TOKEN) and prints it on stdout, alone on
its line: hako keeps only its hash, so this is the only time the key is shown. Store it, e.g.
  export HAKO_API_KEY=$(hako keys create TENANT_ID)

flags:
  --json       print { id, key, prefix, created_at, tenant_id } as one JSON object
  -h, --help   this help

${API_ENV}`;

export const CONVERSATIONS_USAGE = `usage: hako conversations list [--limit N] [--before ID] [--json]
       hako conversations create [--title T] [--no-workspace] [--json]
       hako conversations get ID [--json]

Conversations of the tenant whose API key is HAKO_API_KEY.
  list     newest first (at most --limit, default 50; --before ID continues after ID)
  create   a new conversation; prints its id (then: hako exec ID "prompt")
  get      one conversation

flags:
  --limit N        list: how many (1-500)
  --before ID      list: the conversations created before conversation ID
  --title T        create: a title (otherwise the first prompt names it)
  --no-workspace   create: no persistent /workspace (the agent runs in a read-only directory)
  --json           print JSON (list: an array; create and get: one object)
  -h, --help       this help

${API_ENV}`;

export const EXEC_USAGE = `usage: hako exec CONVERSATION "PROMPT" [--json]

Runs the agent of the conversation on PROMPT (- reads the prompt from stdin) and streams what it
does: tool calls, their output, its answer, and a last line with the run's status, tokens and cost.
Ctrl-C stops the run (the server cancels it when the stream closes).

flags:
  --json       print each event as one JSON object per line (its data: type, seq, ...)
  -h, --help   this help

exit codes: 0 the run completed, 1 it failed or was cancelled (or the request was refused),
2 bad usage, 130 interrupted with Ctrl-C.

${API_ENV}`;

export const SANDBOXES_USAGE = `usage: hako sandboxes list --owner ID [--label K=V]... [--json]

Lists hakod's sandboxes of one owner (hakod's ListSandboxes). hakod scopes every call to an
owner and requires one: hako-api creates each conversation's sandbox with the tenant id as owner
(and labels hako.tenant, hako.conversation), so --owner TENANT_ID lists a tenant's sandboxes.

flags:
  --owner ID      the owner id (required)
  --label K=V     only sandboxes with this label, repeatable (e.g. hako.conversation=ID)
  --json          print the sandboxes as a JSON array
  -h, --help      this help

environment:
  AGENT_ADDRESS or HAKO_AGENT   hakod's address (default 127.0.0.1:7443)
  HAKO_TLS_DIR                  client certificates (ca.pem, client.pem, client-key.pem); default
                                \${HAKO_HOME:-~/.hako}/tls, where \`hako up\` writes them
  AGENT_INSECURE=1              plaintext, for a hakod on loopback started with AGENT_INSECURE=1
  AGENT_AUTH_TOKEN              hakod's bearer token, when it requires one
`;
