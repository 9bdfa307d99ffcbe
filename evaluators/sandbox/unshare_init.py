"""Init of the `unshare` isolation mode: runs as pid 1 inside fresh mount/pid/net/ipc/uts namespaces.

Started by unshare_launcher.py as `python -I -S unshare_init.py SPEC_JSON`, with real root privileges,
or as root of a new user namespace when the evaluator is not root. It builds the same minimal root as
the bwrap mode (rootfs.py) on a tmpfs, chroots into it, then forks the program with dropped privileges
and waits: when this init exits, the kernel kills everything left in the pid namespace.
Standard library only (the file runs on its own, not as part of the package).
"""

import ctypes
import json
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS = 24, 28, 38
# SECBIT_NOROOT and SECBIT_NO_CAP_AMBIENT_RAISE, each with its lock: uid 0 gains no capabilities on exec.
SECUREBITS_NO_ROOT = (1 << 0) | (1 << 1) | (1 << 6) | (1 << 7)
DEVICES = ("null", "zero", "full", "random", "urandom")
_LOCKED_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                 "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}

libc = ctypes.CDLL(None, use_errno=True)


def fail(message):
    sys.stderr.write(f"sandbox setup failed: {message}\n")
    sys.exit(125)


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        fail(f"mount {source!r} on {target!r}: {os.strerror(err)}")


def mount_options(target):
    """Per-mount flags of the mount at `target`: a read-only remount must repeat the locked ones."""
    flags = 0
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == target:
                flags = sum(_LOCKED_FLAGS.get(opt, 0) for opt in fields[5].split(","))
    return flags


def bind_readonly(path, root):
    target = root + path
    os.makedirs(target, mode=0o755, exist_ok=True)
    mount(path, target, None, MS_BIND | MS_REC)
    # A bind inherits the source's per-mount flags; only this top mount is made read-only, so
    # submounts (rare under /usr, /etc, a Python prefix) are remounted too.
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in points:
        if point == target or point.startswith(target + "/"):
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | mount_options(point))


def build_root(spec):
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("sandbox-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in spec["readonly_dirs"]:
        bind_readonly(path, root)
    for path in spec["masked_dirs"]:  # installed packages: nothing a program needs, data it must not read
        mount("sandbox-mask", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555,size=4k")
    for path, target in spec["symlinks"]:
        os.symlink(target, root + path)
    os.makedirs(root + "/proc", mode=0o755)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/dev", mode=0o755)
    mount("sandbox-dev", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        open(root + "/dev/" + name, "w").close()
        mount("/dev/" + name, root + "/dev/" + name, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    size, uid = spec["size"], spec["uid"]
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    for path, mode in (("/dev/shm", "1777"), (spec["tmp"], "1777"), (spec["scratch"], "0700")):
        os.makedirs(root + path, mode=0o755, exist_ok=True)
        extra = owner if path == spec["scratch"] else ""
        mount("sandbox-tmp", root + path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size={size}{extra}")
    scratch = root + spec["scratch"]
    for sub in spec["subdirs"]:
        os.makedirs(os.path.join(scratch, sub), mode=0o700, exist_ok=True)
        if uid is not None:
            os.chown(os.path.join(scratch, sub), uid, uid)
    for rel, fd in spec["files"]:
        path = os.path.join(scratch, rel)
        with open(path, "wb") as out, os.fdopen(fd, "rb") as src:
            out.write(src.read())
        if uid is not None:
            os.chown(path, uid, uid)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    os.chroot(root)
    os.chdir(spec["scratch"])


def drop_privileges(uid):
    os.setsid()
    if uid is not None:  # real root: become the run's throwaway uid; that clears every capability
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:  # root of our own user namespace: keep uid 0 there, but with no capabilities now or after exec
        if libc.prctl(PR_SET_SECUREBITS, SECUREBITS_NO_ROOT, 0, 0, 0) != 0:
            fail(f"securebits: {os.strerror(ctypes.get_errno())}")
        cap = 0
        while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
            cap += 1
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"no_new_privs: {os.strerror(ctypes.get_errno())}")


def main():
    spec = json.loads(sys.argv[1])
    os.umask(0o022)
    build_root(spec)
    child = os.fork()
    if child == 0:
        try:
            drop_privileges(spec["uid"])
            os.execve(spec["command"][0], spec["command"], spec["env"])
        except OSError as exc:
            sys.stderr.write(f"sandbox setup failed: cannot start {spec['command'][0]}: {exc}\n")
        os._exit(125)
    for fd in spec["program_fds"]:  # the program's alone (its ready signal, a test harness's channels)
        os.close(fd)
    while True:  # reap everything (orphans are re-parented to us) until the program itself ends
        pid, status = os.wait()
        if pid == child:
            if os.WIFSIGNALED(status):
                sys.exit(128 + os.WTERMSIG(status))
            sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
