/**
 * Attack probes for the security suite: small Python (ctypes) programs that run inside a sandbox,
 * try one thing each, and print one machine-readable line per attempt. The test parses the
 * lines and asserts the exact outcome (errno, exit code, output) of every attempt by name, so a
 * failure says which attack got through.
 *
 * Every line is `PROBE {"name": …, "ok": true, "value": …}` or `PROBE {"name": …, "ok": false,
 * "errno": "EPERM", "detail": …}`; programs run with `cmd` report `errno` as `rc=N` and their
 * output (stdout and stderr on one line) as `detail`.
 */
import assert from 'node:assert/strict';

/** One attempt made by a Python probe. */
export interface Probe {
  readonly name: string;
  readonly ok: boolean;
  /** Symbolic errno (`EPERM`) when the attempt failed with an OSError, else the exception name. */
  readonly errno?: string;
  readonly value?: unknown;
  readonly detail?: string;
}

/**
 * Python helpers every probe script starts with. x86_64 syscall numbers (the suite asserts the
 * machine first); `sc(name, ...)` raises OSError with the real errno; `probe(name, fn)` prints the
 * outcome of fn(); `parallel([(name, fn)...])` runs slow probes (connect timeouts) side by side;
 * `int80(nr, a, b, c, data)` makes a 32-bit (ia32) system call from this 64-bit process, the
 * classic way around a seccomp filter that forgets the compat architecture.
 */
export const PY_PRELUDE = String.raw`
import ctypes, errno, json, mmap, os, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {'unshare': 272, 'setns': 308, 'mount': 165, 'umount2': 166, 'pivot_root': 155, 'chroot': 161,
      'ptrace': 101, 'process_vm_readv': 310, 'kcmp': 312, 'pidfd_open': 434, 'pidfd_getfd': 438,
      'bpf': 321, 'perf_event_open': 298, 'userfaultfd': 323, 'io_uring_setup': 425, 'keyctl': 250,
      'add_key': 248, 'request_key': 249, 'name_to_handle_at': 303, 'open_by_handle_at': 304,
      'sethostname': 170, 'setdomainname': 171, 'settimeofday': 164, 'clock_settime': 227,
      'adjtimex': 159, 'syslog': 103, 'reboot': 169, 'swapon': 167, 'acct': 163, 'init_module': 175,
      'iopl': 172, 'ioperm': 173, 'mknodat': 259, 'fsopen': 430, 'open_tree': 428, 'clone': 56,
      'clone3': 435, 'socket': 41, 'quotactl': 179, 'ioctl': 16, 'kexec_load': 246}
def _arg(a):
    if isinstance(a, int): return ctypes.c_long(a)
    if isinstance(a, bytes): return ctypes.c_char_p(a)
    return a
def sc_raw(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
def sc(name, *args):
    return sc_raw(NR[name], *args)
def _outcome(name, fn):
    try:
        v = fn()
        try:
            json.dumps(v)
        except Exception:
            v = repr(v)
        return {'name': name, 'ok': True, 'value': v}
    except OSError as e:
        if e.errno is None and isinstance(e, TimeoutError):
            return {'name': name, 'ok': False, 'errno': 'ETIMEDOUT', 'detail': str(e)}
        code = errno.errorcode.get(e.errno, str(e.errno)) if e.errno is not None else type(e).__name__
        return {'name': name, 'ok': False, 'errno': code, 'detail': str(e)[:300]}
    except Exception as e:
        return {'name': name, 'ok': False, 'errno': type(e).__name__, 'detail': str(e)[:300]}
def unhex(items):
    # needles travel hex-encoded so the script's own command line does not contain them
    return [bytes.fromhex(h).decode() for h in items]
def emit(d):
    print('PROBE ' + json.dumps(d), flush=True)
def probe(name, fn):
    emit(_outcome(name, fn))
def parallel(items):
    out = [None] * len(items)
    def work(i, name, fn):
        out[i] = _outcome(name, fn)
    ts = [threading.Thread(target=work, args=(i, n, f)) for i, (n, f) in enumerate(items)]
    for t in ts: t.start()
    for t in ts: t.join()
    for d in out: emit(d)
def cmd(name, argv, timeout=60):
    # runs a program; ok means exit 0; errno is rc=N; detail is stdout+stderr on one line
    import subprocess
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        out = r.stdout.decode(errors='replace').replace('\n', ' ')[:3000]
        emit({'name': name, 'ok': r.returncode == 0, 'errno': 'rc=%d' % r.returncode, 'detail': out, 'value': out})
    except (OSError, subprocess.TimeoutExpired) as e:
        emit({'name': name, 'ok': False, 'errno': type(e).__name__, 'detail': str(e)[:300]})
def connect(host, port, timeout=2.0, family=socket.AF_INET, source=None, freebind=False):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if freebind:
            s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        if source:
            s.bind((source, 0))
        s.connect((host, port) if family == socket.AF_INET else host)
        s.settimeout(1.0)
        try:
            data = s.recv(64)
        except OSError:
            data = b''
        return 'connected:' + data.decode(errors='replace').strip()
    finally:
        s.close()
def write_file(path, data=b'x', mode='wb'):
    with open(path, mode) as f:
        f.write(data)
    return 'written'
def read_file(path, limit=1 << 20):
    with open(path, 'rb') as f:
        return f.read(limit).decode(errors='replace')
def fill(path, chunk=1 << 20, limit=1 << 30):
    # writes until an error; returns [bytes_written, errno_name or None]
    n = 0
    err = None
    try:
        with open(path, 'wb', buffering=0) as f:
            block = b'\xa5' * chunk
            while n < limit:
                n += f.write(block)
                if n % (8 << 20) == 0: os.fsync(f.fileno())
            os.fsync(f.fileno())
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    return [n, err]
def walk(roots, skip=('/proc', '/sys', '/usr', '/dev')):
    for root in roots:
        for d, dirs, files in os.walk(root, onerror=lambda e: None, followlinks=False):
            dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
            for f in files:
                yield os.path.join(d, f)
def grep_tree(needles, roots=('/',), skip=('/proc', '/sys', '/usr', '/dev'), limit=1 << 20):
    # every regular file under roots whose name or first limit bytes contain a needle
    found = []
    for p in walk(roots, skip):
        if any(n in os.path.basename(p) for n in needles):
            found.append(p)
            continue
        try:
            if os.path.islink(p) or not os.path.isfile(p): continue
            with open(p, 'rb') as f:
                data = f.read(limit)
        except OSError:
            continue
        if any(n.encode() in data for n in needles):
            found.append(p)
    return found
_LOW = None
def int80(nr, a=0, b=0, c=0, data=b''):
    # mov eax,nr; mov ebx,a; mov ecx,b; mov edx,c; int 0x80; ret  -- code at LOW, data at LOW+256
    global _LOW
    if _LOW is None:
        _LOW = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)  # 0x40: MAP_32BIT
    base = ctypes.addressof(ctypes.c_char.from_buffer(_LOW))
    u32 = lambda x: struct.pack('<I', x & 0xffffffff)
    code = b'\xb8' + u32(nr) + b'\xbb' + u32(a) + b'\xb9' + u32(b) + b'\xba' + u32(c) + b'\xcd\x80\xc3'
    _LOW.seek(0); _LOW.write(code); _LOW.seek(256); _LOW.write(data)
    fn = ctypes.CFUNCTYPE(ctypes.c_int)(base)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, ('%d\n' % fn()).encode())
        finally:
            os._exit(0)  # also a clone()d grandchild, whose write may fail
    os.close(w)
    _, st = os.waitpid(pid, 0)
    out = os.read(r, 64).decode().split('\n')[0]
    os.close(r)
    if not out: raise OSError(errno.ENOSYS, 'ia32 call killed the child (status %d)' % st)
    v = int(out)
    if v < 0: raise OSError(-v, os.strerror(-v))
    return v
def low_addr(off=256):
    int80(20)  # getpid: maps the low page
    return ctypes.addressof(ctypes.c_char.from_buffer(_LOW)) + off
if os.uname().machine != 'x86_64':
    print('PROBE ' + json.dumps({'name': 'machine', 'ok': False, 'errno': 'EINVAL', 'detail': os.uname().machine}))
    sys.exit(3)
`;

/** argv that runs `body` (Python, after the prelude) with the host's python3. */
export function py(body: string): string[] {
  return ['python3', '-c', `${PY_PRELUDE}\n${body}`];
}

/** The PROBE lines of a probe script's stdout, by name. Duplicate names are an error. */
export function parseProbes(stdout: string): Map<string, Probe> {
  const out = new Map<string, Probe>();
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('PROBE ')) continue;
    const p = JSON.parse(line.slice(6)) as Probe;
    assert.ok(!out.has(p.name), `probe ${p.name} reported twice`);
    out.set(p.name, p);
  }
  return out;
}

function describe(p: Probe | undefined): string {
  if (!p) return 'the probe did not report (did the script crash?)';
  return p.ok
    ? `it SUCCEEDED (value ${JSON.stringify(p.value)})`
    : `it failed with ${p.errno} (${p.detail ?? ''})`;
}

/** Asserts probe `name` failed with one of `errnos`; `what` says what the attack was. */
export function expectErrno(
  probes: Map<string, Probe>,
  name: string,
  errnos: string | readonly string[],
  what: string,
): void {
  const want = typeof errnos === 'string' ? [errnos] : errnos;
  const p = probes.get(name);
  assert.ok(
    p && !p.ok && want.includes(p.errno ?? ''),
    `${what} [${name}]: expected ${want.join(' or ')}, but ${describe(p)}`,
  );
}

/** Asserts probe `name` succeeded (a positive control) and returns its value. */
export function expectOk(probes: Map<string, Probe>, name: string, what: string): unknown {
  const p = probes.get(name);
  assert.ok(p?.ok, `control ${what} [${name}]: expected success, but ${describe(p)}`);
  return p.value;
}

/** Asserts program run `name` (see `cmd`) exited non-zero with output matching `pattern`. */
export function expectCmdFails(
  probes: Map<string, Probe>,
  name: string,
  pattern: RegExp,
  what: string,
): void {
  const p = probes.get(name);
  assert.ok(p, `${what} [${name}]: the program did not report`);
  assert.ok(
    !p.ok && pattern.test(p.detail ?? ''),
    `${what} [${name}]: expected a failure matching ${pattern}, got ${p.errno}: ${p.detail ?? ''}`,
  );
}
