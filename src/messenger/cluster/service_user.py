"""Running the cluster's servers as an unprivileged user.

PostgreSQL refuses to run as root, and PgBouncer and Redis should not. When the caller is root,
the servers run as a system user created on demand; otherwise they run as the caller.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "messenger"


@dataclass(frozen=True, slots=True)
class ServiceUser:
    name: str
    uid: int
    gid: int

    @property
    def is_caller(self) -> bool:
        return self.uid == os.geteuid()


def service_user(name: str = SERVICE_USER) -> ServiceUser:
    """The user the servers run as, created (as a system user) when the caller is root."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return ServiceUser(me.pw_name, me.pw_uid, me.pw_gid)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def give_to(user: ServiceUser, path: Path) -> None:
    """Make `path` (a file, or a directory tree) belong to the service user."""
    if user.is_caller:
        return
    os.lchown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, user.uid, user.gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.uid, user.gid)


def grant_traverse(user: ServiceUser, path: Path) -> None:
    """Let the service user reach `path` through directories only root may enter (e.g. /root).

    Each ancestor the user cannot search gets an ACL entry granting that one user search
    (`--x`) permission: nothing is listed or readable to it, and nobody else gains access.
    """
    if user.is_caller:
        return
    target = path.resolve()
    for ancestor in [*reversed(target.parents), target]:
        if _can_search(user, ancestor):
            continue
        try:
            subprocess.run(
                ["setfacl", "-m", f"u:{user.name}:--x", str(ancestor)],
                check=True, capture_output=True, text=True,
            )
        except FileNotFoundError:
            # No ACL tools: fall back to the coarser world-search bit.
            ancestor.chmod(ancestor.stat().st_mode | 0o001)
        except subprocess.CalledProcessError as exc:
            raise PermissionError(
                f"cannot let user {user.name} reach {path}: setfacl on {ancestor} failed: "
                f"{exc.stderr.strip()}"
            ) from None


def _can_search(user: ServiceUser, directory: Path) -> bool:
    return run_as(user, ["test", "-x", str(directory)]).returncode == 0


def run_as(user: ServiceUser, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a program as the service user, capturing its output."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    if not user.is_caller:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
    return subprocess.run(args, **kwargs)  # type: ignore[call-overload,no-any-return]
