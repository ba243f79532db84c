package storage

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// roomVFS is the SQLite VFS rooms open their files with: SQLite's unix
// layer without its locks (unix-none), with the open registerRoomVFS
// gives it. The locking unix VFS keeps one list of every file the process
// has open and walks it twice at each open, under a mutex for the whole
// process; with a thousand rooms awake that walk, on memory gone cold
// between wakes, cost up to a quarter of a wake's storage time. den never
// opens a room's file twice (one Room per id), so what the locks still did
// was keep other processes out; lockFile does that instead. It stays
// unix-none when the room VFS could not be registered. Set once, by tune,
// before a Store opens.
var roomVFS = "unix-none"

// roomVFSName is the name den registers its room VFS under.
const roomVFSName = "den-room"

// unixNoneOpen and unixNoneFullPathname are unix-none's xOpen and
// xFullPathname, which the room VFS's call.
var unixNoneOpen, unixNoneFullPathname uintptr

// vfsOpen and vfsFullPathname are the signatures of a VFS's xOpen and
// xFullPathname as modernc.org/sqlite calls them.
type (
	vfsOpen         = func(t *libc.TLS, vfs, name, file uintptr, flags int32, outFlags uintptr) int32
	vfsFullPathname = func(t *libc.TLS, vfs, name uintptr, size int32, out uintptr) int32
)

// registerRoomVFS registers roomVFSName: unix-none, whose open of a WAL
// that is already there does not ask for it to be created, and which takes
// an absolute path as the file's full name. SQLite always opens a WAL
// asking to create it, and the unix layer then syncs the WAL's folder at
// its first sync, once per open: with --sync full, an open and an fsync of
// the folder at each wake's first commit, for a file whose name was on
// disk long before. The folder's sync matters only for a WAL whose name is
// not on disk yet: with SyncFull, padWAL makes a WAL that is missing, and
// syncs the folder of one that is short (which one SQLite made in an open
// that never synced is), under the file's lock before SQLite opens it, at
// every open; one an earlier process left is on disk by Open's sync of the
// file system. With SyncNormal, whose commits may be lost with the power
// anyway, SQLite makes a missing WAL and syncs its folder at its first
// sync, as before.
//
// To find a file's full name the unix layer looks at each folder on its
// path for a link (an lstat each, five a wake), so that a database reached
// through a link has its WAL beside the file itself, and it opens the
// name it found with O_NOFOLLOW. Only a link in the last place matters to
// either: a room's file that is one (moved to another disk and linked
// back) is left to unix-none; for one that is not, the WAL is beside it
// whatever links its folders are, so one lstat does.
func registerRoomVFS() error {
	t := libc.NewTLS()
	defer t.Close()
	base, err := findVFS(t, "unix-none")
	if err != nil {
		return err
	}
	var v sqlite3.Tsqlite3_vfs
	size := libc.Tsize_t(unsafe.Sizeof(v))
	// Registered for the life of the process, so never freed.
	p := libc.Xmalloc(t, size)
	name, err := libc.CString(roomVFSName)
	if p == 0 || err != nil {
		return errors.New("storage: out of memory registering the room VFS")
	}
	libc.Xmemcpy(t, p, base, size)
	libc.AtomicStorePUintptr(p+unsafe.Offsetof(v.FzName), name)
	libc.AtomicStorePUintptr(p+unsafe.Offsetof(v.FpNext), 0)
	unixNoneOpen = libc.AtomicLoadPUintptr(base + unsafe.Offsetof(v.FxOpen))
	unixNoneFullPathname = libc.AtomicLoadPUintptr(base + unsafe.Offsetof(v.FxFullPathname))
	libc.AtomicStorePUintptr(p+unsafe.Offsetof(v.FxOpen), cFunc[vfsOpen](roomOpen))
	libc.AtomicStorePUintptr(p+unsafe.Offsetof(v.FxFullPathname), cFunc[vfsFullPathname](roomFullPathname))
	if rc := sqlite3.Xsqlite3_vfs_register(t, p, 0); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("storage: sqlite3_vfs_register: error %d", rc)
	}
	roomVFS = roomVFSName
	return nil
}

// cFunc is f as modernc.org/sqlite's C code holds a function: the pointer
// its Go func value is (go.dev/s/go11func), static for a top-level func.
func cFunc[F any](f F) uintptr { return *(*uintptr)(unsafe.Pointer(&f)) }

// goFunc is the C function pointer p as the Go func it is.
func goFunc[F any](p uintptr) F { return *(*F)(unsafe.Pointer(&p)) }

// findVFS is SQLite's VFS of that name.
func findVFS(t *libc.TLS, name string) (uintptr, error) {
	cname, err := libc.CString(name)
	if err != nil {
		return 0, err
	}
	defer libc.Xfree(t, cname)
	vfs := sqlite3.Xsqlite3_vfs_find(t, cname)
	if vfs == 0 {
		return 0, fmt.Errorf("storage: SQLite has no %s VFS", name)
	}
	return vfs, nil
}

// roomOpen is the room VFS's xOpen: unix-none's, without create for a WAL
// that is there.
func roomOpen(t *libc.TLS, vfs, name, file uintptr, flags int32, outFlags uintptr) int32 {
	open := goFunc[vfsOpen](unixNoneOpen)
	const create = sqlite3.SQLITE_OPEN_CREATE
	if flags&sqlite3.SQLITE_OPEN_WAL != 0 && flags&create != 0 && name != 0 &&
		libc.Xaccess(t, name, unix.F_OK) == 0 {
		rc := open(t, vfs, name, file, flags&^create, outFlags)
		if rc != sqlite3.SQLITE_CANTOPEN {
			return rc
		}
		// Gone since it was looked for: make it after all.
	}
	return open(t, vfs, name, file, flags, outFlags)
}

// roomFullPathname is the room VFS's xFullPathname: an absolute path that
// does not name a link as it is (the store's paths are clean:
// filepath.Join), anything else as unix-none has it.
func roomFullPathname(t *libc.TLS, vfs, name uintptr, size int32, out uintptr) int32 {
	var st unix.Stat_t
	if name != 0 && libc.AtomicLoadPUint8(name) == '/' &&
		(unix.Lstat(libc.GoString(name), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK) {
		if n := libc.Xstrlen(t, name); n < libc.Tsize_t(size) {
			libc.Xmemcpy(t, out, name, n+1)
			return sqlite3.SQLITE_OK
		}
	}
	return goFunc[vfsFullPathname](unixNoneFullPathname)(t, vfs, name, size, out)
}
