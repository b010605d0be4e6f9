/**
 * The seccomp filter every sandbox gets (OCI `linux.seccomp`). It starts from allow-by-default, as
 * the agent's tools are arbitrary programs, and denies the syscalls that reach kernel attack surface
 * or let a process step outside its namespaces. The list and the reason for each entry are in
 * docs/security-model.md; keep them in sync (a unit test checks that every name appears there).
 */

const EPERM = 1;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;

/** Denied outright with EPERM. */
export const DENIED_SYSCALLS: readonly string[] = [
  // mounts and the new mount API
  'mount',
  'umount',
  'umount2',
  'pivot_root',
  'chroot',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'move_mount',
  'open_tree',
  'mount_setattr',
  // namespaces
  'unshare',
  'setns',
  // tracing other processes and reading their memory
  'ptrace',
  'process_vm_readv',
  'process_vm_writev',
  'kcmp',
  'pidfd_getfd',
  // kernel code and kernel features with a long CVE history
  'kexec_load',
  'kexec_file_load',
  'init_module',
  'finit_module',
  'delete_module',
  'bpf',
  'perf_event_open',
  'userfaultfd',
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  // keyrings (not namespaced)
  'keyctl',
  'add_key',
  'request_key',
  // file handles bypass path-based confinement
  'open_by_handle_at',
  'name_to_handle_at',
  // host-wide knobs
  'reboot',
  'swapon',
  'swapoff',
  'sethostname',
  'setdomainname',
  'settimeofday',
  'clock_settime',
  'clock_adjtime',
  'adjtimex',
  'acct',
  'quotactl',
  'quotactl_fd',
  'syslog',
  'vhangup',
  'iopl',
  'ioperm',
  'lookup_dcookie',
  'nfsservctl',
  'uselib',
  'mknod',
  'mknodat',
];

const CLONE_NEW_FLAGS: readonly number[] = [
  0x00000080, // CLONE_NEWTIME
  0x00020000, // CLONE_NEWNS
  0x02000000, // CLONE_NEWCGROUP
  0x04000000, // CLONE_NEWUTS
  0x08000000, // CLONE_NEWIPC
  0x10000000, // CLONE_NEWUSER
  0x20000000, // CLONE_NEWPID
  0x40000000, // CLONE_NEWNET
];

const TIOCSTI = 0x5412; // push bytes into a terminal's input queue: keystroke injection into the launcher's tty
const TIOCLINUX = 0x541c;
const AF_VSOCK = 40; // the VM host's control channels
/** Mask for arguments the kernel reads as 32-bit ints (see the ioctl rules below). */
const LOW_32_BITS = 0xffffffff;

export interface SeccompRule {
  names: string[];
  action: 'SCMP_ACT_ERRNO' | 'SCMP_ACT_ALLOW';
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: 'SCMP_CMP_EQ' | 'SCMP_CMP_MASKED_EQ' }[];
}

export interface SeccompProfile {
  defaultAction: 'SCMP_ACT_ALLOW';
  architectures: string[];
  syscalls: SeccompRule[];
}

/** Builds the OCI seccomp section. */
export function buildSeccompProfile(): SeccompProfile {
  const syscalls: SeccompRule[] = [
    { names: [...DENIED_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
  ];
  // clone3 passes flags in a struct seccomp cannot read: answer ENOSYS so libc falls back to clone.
  syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS });
  // clone with any namespace flag is unshare by another name.
  for (const flag of CLONE_NEW_FLAGS) {
    syscalls.push({
      names: ['clone'],
      action: 'SCMP_ACT_ERRNO',
      errnoRet: EPERM,
      args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
    });
  }
  // ioctl's request and socket's family are 32-bit in the kernel, but seccomp sees the 64-bit
  // register: `ioctl(fd, (1 << 32) | TIOCSTI)` does not equal TIOCSTI yet the kernel runs TIOCSTI
  // (CVE-2019-10063). Each value is therefore matched on its low 32 bits only (MASKED_EQ: arg &
  // value == valueTwo), which also covers the exact value.
  for (const req of [TIOCSTI, TIOCLINUX]) {
    syscalls.push({
      names: ['ioctl'],
      action: 'SCMP_ACT_ERRNO',
      errnoRet: EPERM,
      args: [{ index: 1, value: LOW_32_BITS, valueTwo: req, op: 'SCMP_CMP_MASKED_EQ' }],
    });
  }
  syscalls.push({
    names: ['socket', 'socketpair'],
    action: 'SCMP_ACT_ERRNO',
    errnoRet: EAFNOSUPPORT,
    args: [{ index: 0, value: LOW_32_BITS, valueTwo: AF_VSOCK, op: 'SCMP_CMP_MASKED_EQ' }],
  });
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: [
      'SCMP_ARCH_X86_64',
      'SCMP_ARCH_X86',
      'SCMP_ARCH_X32',
      'SCMP_ARCH_AARCH64',
      'SCMP_ARCH_ARM',
    ],
    syscalls,
  };
}
