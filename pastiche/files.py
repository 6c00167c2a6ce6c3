"""Paths a run reads and writes: checked before any work, with a one-line PasticheError that
says what is wrong and the fix; files written atomically, so that none is ever left half
written or clobbered by a failed write. No torch or PIL here: the weights format uses it too."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import stat
import tempfile
from typing import Iterator, Sequence, Union

from .errors import PasticheError, option_name


def _path_problem(exc: OSError) -> str:
    """Why a path cannot be used, and the fix, from the OSError of a stat() or open() of it."""
    if exc.errno == errno.ELOOP:
        return "its symbolic links form a loop; point them at a file"
    if isinstance(exc, PermissionError):
        return "permission denied (the file, or a folder on its path); check the permissions"
    if isinstance(exc, FileNotFoundError):
        return "no such file; check the path"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder; check the path"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long; check the path"
    return f"{exc.strerror or exc}; check the path"


def check_readable(path: Union[str, os.PathLike], label: str, *, expected: str = "an image file") -> None:
    """PasticheError "cannot read {label}: why; fix" unless ``path`` reaches something that is not
    a directory: missing, a loop of links, a folder on the way the user may not search. Image,
    video, weights and calibration inputs all pass here first."""
    try:
        mode = os.stat(path).st_mode  # follows links: a dangling one is "no such file"
    except OSError as exc:
        raise PasticheError(f"cannot read {label}: {_path_problem(exc)}") from None
    if stat.S_ISDIR(mode):
        raise PasticheError(f"cannot read {label}: it is a directory; pass {expected}")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):  # reading one would wait for a writer, maybe forever
        raise PasticheError(f"cannot read {label}: it is a pipe or a socket, not a file; pass {expected}")


def output_path(path: Union[str, os.PathLike], option: str = "output") -> pathlib.Path:
    """``path`` as a Path, or PasticheError naming the option ``option`` (a keyword, see
    :func:`~pastiche.errors.option_name`) where it is empty: Path("") is the current folder."""
    if os.fspath(path) == "":
        raise PasticheError(f"{option_name(option)} is empty; give a file name")
    return pathlib.Path(os.fspath(path))


def check_writable(path: Union[str, os.PathLike], *, inputs: Sequence[object], kind: str,
                   input_kind: str, option: str = "output") -> pathlib.Path:
    """``path`` can be created or replaced, and is none of the path entries of ``inputs``; the
    errors say "cannot write {kind} 'path'" and "refusing to overwrite {input_kind} 'q'", and
    name the option ``option`` (a keyword, see :func:`~pastiche.errors.option_name`) as what to
    change."""
    p, option = output_path(path, option), option_name(option)
    try:
        _check_writable(os.fspath(path), kind, option)
    except OSError as exc:  # e.g. a name over the filesystem's limit, a loop of links
        raise PasticheError(f"cannot write {kind} '{p}': {_path_problem(exc)}") from None
    for inp in inputs:
        if not isinstance(inp, (str, os.PathLike)):
            continue
        q = pathlib.Path(os.fspath(inp))
        try:  # samefile also catches hard links; resolve() handles a not-yet-existing output
            same = os.path.samefile(p, q) if p.exists() and q.exists() else p.resolve() == q.resolve()
        except (OSError, RuntimeError):  # RuntimeError: resolve() meeting a loop of links before 3.13
            same = False
        if same:
            raise PasticheError(
                f"refusing to overwrite {input_kind} '{q}' with the output; choose another {option}"
            )
    return p


def _check_writable(path: str, kind: str, option: str) -> None:
    """check_writable's checks of ``path`` itself: PasticheError, or the OSError of a failed query."""
    p = pathlib.Path(path)
    if os.path.isdir(p):
        raise PasticheError(f"cannot write {kind} '{p}': it is a directory; give a file name")
    if path.endswith(tuple(filter(None, (os.sep, os.altsep)))):
        raise PasticheError(f"cannot write {kind} '{path}': a path ending in a separator names a"
                            " directory; give a file name")
    # A link is written through (atomic_file): its target's folder is the one that must take the file
    parent = pathlib.Path(os.path.realpath(p)).parent if os.path.islink(p) else p.parent
    if not parent.is_dir():
        why = "is a file, not a directory;" if parent.exists() else "does not exist; create it or"
        raise PasticheError(f"cannot write {kind} '{p}': directory '{parent}' {why} choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PasticheError(f"cannot write {kind} '{p}': directory '{parent}' is not writable;"
                            f" choose another {option}")
    name_max = _name_max(parent)
    if len(os.fsencode(p.name)) > name_max:
        raise PasticheError(f"cannot write {kind} '{p}': its name is {len(os.fsencode(p.name))} bytes,"
                            f" over this filesystem's {name_max}; choose a shorter {option}")
    try:
        mode = os.stat(p).st_mode  # through links, as the write goes
    except OSError:  # none yet, or a loop of links, which is a name like any other (replaced, not followed)
        mode = None
    if mode is not None and not stat.S_ISREG(mode):  # a pipe, a device (/dev/null): replacing it is no write
        what = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise PasticheError(f"cannot write {kind} '{p}': it is {what} or other special file, not a regular"
                            f" one; choose another {option}")
    if mode is not None and not os.access(p, os.W_OK):  # replacing it would go round its permissions
        raise PasticheError(f"cannot write {kind} '{p}': the file is read-only; choose another {option}"
                            " or make it writable")


def _name_max(folder: pathlib.Path) -> int:
    """The longest file name in bytes ``folder``'s filesystem takes: 255 where it does not say
    (no pathconf on Windows; -1 or EINVAL on some filesystems)."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX") if hasattr(os, "pathconf") else -1
    except OSError:
        limit = -1
    return limit if limit > 0 else 255


def _new_file_mode(target: pathlib.Path) -> int:
    # mkstemp creates 0600 files; give the result the mode a plain open() would have.
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# What link() says on filesystems without hard links (FAT, some network ones; EINVAL: Windows'
# "Incorrect function" on FAT and exFAT)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EINVAL}


def _rename_to_new(tmp: str, path: pathlib.Path) -> None:
    """Move ``tmp`` to ``path`` where nothing is there, else FileExistsError: as a hard link, which
    fails if the name is taken (atomic: of two writers, one gets it), then ``tmp`` unlinked.
    Without hard links, the name is taken by an exclusive create, then replaced."""
    try:
        os.link(tmp, path)
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.replace(tmp, path)
        except BaseException:  # an interrupt too, which can land just after the rename
            if os.path.lexists(tmp):  # not moved: the name holds the empty file that took it
                os.unlink(path)
            raise
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(path: pathlib.Path, *, suffix: str = ".tmp", replace: bool = True) -> Iterator[str]:
    """A temporary file name beside ``path`` (same filesystem, so the rename is atomic). When the
    block finishes, the file takes the mode a plain open() would give and replaces ``path``; if
    the block fails or is interrupted, it is removed and ``path`` is untouched. A symbolic link
    is written through, as open() does: its target is replaced, the link stays. ``replace``
    false: FileExistsError instead where anything (a link too) is at ``path`` by then."""
    path = pathlib.Path(path)
    # through a link where replacing, as open() goes; else the name itself, in the folder the system resolves
    path = pathlib.Path(os.path.realpath(path) if replace else os.path.join(os.path.realpath(path.parent), path.name))
    # a short name: one derived from ``path``'s could pass the filesystem's limit on names
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pastiche-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode(path))
        (os.replace if replace else _rename_to_new)(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
