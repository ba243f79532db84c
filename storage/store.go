package storage

import (
	"container/list"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/den-rooms/den/internal/clock"
)

// Defaults for Options left zero.
const (
	DefaultMaxOpen          = 4096
	DefaultCacheKiB         = 256
	DefaultMaxDatabaseBytes = 10 << 30
	DefaultMaxValueBytes    = 2 << 20
	DefaultMaxKeyBytes      = 2 << 10
	DefaultMaxBatchKeys     = 128
)

// Synchronous settings: how hard a commit waits for the disk.
const (
	// SyncFull (the default) fsyncs the WAL on every commit: a commit that
	// returned survives power loss.
	SyncFull = "full"
	// SyncNormal fsyncs only at checkpoints, and once as the Store
	// closes: a commit that returned survives a crash of den, but power
	// loss may take the last commits back. Output already released to
	// clients would then be lost.
	SyncNormal = "normal"
)

// Limits bound what one room may store. Each is reported as a LimitError.
type Limits struct {
	MaxDatabaseBytes int64 // one room's database file
	MaxValueBytes    int64 // a KV value, or any string, blob or row in SQL
	MaxKeyBytes      int64 // a KV key
	MaxBatchKeys     int   // keys in one KV call
}

// Options configure a Store. The zero value of each field means its
// default; Dir is required.
type Options struct {
	Dir         string // data folder: node.db and rooms/
	Synchronous string // SyncFull or SyncNormal
	// MaxOpen bounds open room databases. Each costs two descriptors
	// (database and WAL; exclusive locking needs no -shm) and CacheKiB of
	// page cache. When the pool is full, the least recently used room not
	// in a transaction closes its handle; it reopens on its next use.
	MaxOpen  int
	CacheKiB int
	Limits   Limits
	Clock    clock.Clock
}

// Store is a node's storage: its node.db and its rooms' databases. Its
// methods are safe for concurrent use; each Room is used by one goroutine
// at a time.
type Store struct {
	dir    string
	sync   string
	cache  int
	limits Limits
	clock  clock.Clock
	node   *sql.DB

	mu      sync.Mutex
	cond    *sync.Cond // a handle was given up
	maxOpen int
	lru     *list.List // *Room with an open handle, most recently used first
	rooms   map[string]*Room
	closed  bool
	// deleting holds the rooms Delete is removing, closed when it is done:
	// Room waits for it, so that a room opened meanwhile is not left with
	// its file but without its record.
	deleting map[string]chan struct{}
	// unfinished holds the rooms whose deletion node.db records but whose
	// files or record could not be removed: Room tries again before it
	// opens one, so that a deletion never comes back to take a room made
	// since.
	unfinished map[string]struct{}
	// openDeletions is why deletions recorded before Open could not be
	// finished by it.
	openDeletions error

	// Sizes measured as handles close, written to node.db together once
	// a second: one commit there per room that sleeps would queue every
	// wake's read of node.db behind an fsync.
	sizesMu sync.Mutex
	sizes   map[string]int64
	quit    chan struct{}
	flushed chan struct{}

	emptyMu sync.Mutex
	empty   []byte // the image new room files are made from (newfile.go)
}

// RoomRecord is what node.db keeps about a room this node created.
type RoomRecord struct {
	ID      string
	Kind    string
	Name    string
	Created time.Time
	Bytes   int64 // database and WAL on disk when its handle last closed (written to node.db within a second)
}

// Open opens (creating if needed) the store in opts.Dir.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("storage: no data folder")
	}
	tune()
	// Absolute, so that rooms' files have their full names as they are
	// (roomFullPathname) and do not depend on the working directory.
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	opts.Dir = dir
	s := &Store{
		dir: opts.Dir, sync: opts.Synchronous, cache: opts.CacheKiB, limits: opts.Limits,
		clock: opts.Clock, maxOpen: opts.MaxOpen, lru: list.New(), rooms: map[string]*Room{}, deleting: map[string]chan struct{}{},
		unfinished: map[string]struct{}{},
	}
	s.cond = sync.NewCond(&s.mu)
	if s.sync == "" {
		s.sync = SyncFull
	}
	if s.sync != SyncFull && s.sync != SyncNormal {
		return nil, fmt.Errorf("storage: synchronous %q: want %q or %q", s.sync, SyncFull, SyncNormal)
	}
	s.cache = cmpOr(s.cache, DefaultCacheKiB)
	s.maxOpen = cmpOr(s.maxOpen, DefaultMaxOpen)
	s.limits.MaxDatabaseBytes = cmpOr(s.limits.MaxDatabaseBytes, DefaultMaxDatabaseBytes)
	s.limits.MaxValueBytes = cmpOr(s.limits.MaxValueBytes, DefaultMaxValueBytes)
	s.limits.MaxKeyBytes = cmpOr(s.limits.MaxKeyBytes, DefaultMaxKeyBytes)
	s.limits.MaxBatchKeys = cmpOr(s.limits.MaxBatchKeys, DefaultMaxBatchKeys)
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "rooms"), 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := checkFileLocks(filepath.Join(s.dir, "rooms")); err != nil {
		return nil, err
	}
	if s.sync == SyncFull {
		// A room's WAL opens without a sync of its folder when it is
		// there (registerRoomVFS): one an earlier process made and never
		// synced gets its name on disk here.
		if err := s.syncfs(); err != nil {
			return nil, err
		}
	}
	node, err := sql.Open("sqlite", s.dsn(filepath.Join(s.dir, "node.db")))
	if err != nil {
		return nil, fmt.Errorf("storage: node.db: %w", err)
	}
	node.SetMaxOpenConns(1)
	node.SetMaxIdleConns(1)
	if _, err := node.Exec(`CREATE TABLE IF NOT EXISTS rooms (
		id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
		created INTEGER NOT NULL, bytes INTEGER NOT NULL DEFAULT 0);
		CREATE TABLE IF NOT EXISTS alarms (
		id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, at INTEGER NOT NULL);
		CREATE INDEX IF NOT EXISTS alarms_at ON alarms (at);
		CREATE TABLE IF NOT EXISTS deletions (id TEXT PRIMARY KEY)`); err != nil {
		node.Close()
		return nil, fmt.Errorf("storage: node.db: %w", err)
	}
	s.node = node
	if err := s.finishDeletions(); err != nil {
		node.Close()
		return nil, fmt.Errorf("storage: node.db: %w", err)
	}
	s.sizes, s.quit, s.flushed = map[string]int64{}, make(chan struct{}), make(chan struct{})
	go s.flushLoop()
	return s, nil
}

func (s *Store) flushLoop() {
	defer close(s.flushed)
	t := s.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C():
			s.flushSizes()
		}
	}
}

// flushSizes writes the sizes measured since the last flush, in one
// transaction, best effort: they are figures for the admin API, not data.
func (s *Store) flushSizes() {
	s.sizesMu.Lock()
	sizes := s.sizes
	s.sizes = map[string]int64{}
	s.sizesMu.Unlock()
	if len(sizes) == 0 {
		return
	}
	tx, err := s.node.Begin()
	if err != nil {
		return
	}
	for id, b := range sizes {
		_, _ = tx.Exec(`UPDATE rooms SET bytes = ? WHERE id = ?`, b, id)
	}
	_ = tx.Commit()
}

func cmpOr[T int | int64](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// uriEscaper escapes what SQLite reads in a "file:" URI's path as
// something else: an escape, the query and the fragment.
var uriEscaper = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// fileURI is the "file:" URI of the file at path.
func fileURI(path string) string { return "file:" + uriEscaper.Replace(path) }

// dsn is node.db's open string (a room's file sets its pragmas in
// openFile). Exclusive locking must be set before the first access in WAL
// mode, so that SQLite keeps the WAL index in memory and never creates the
// -shm file: one descriptor less. The driver runs _pragma values sorted by
// name, then _journal_mode; so journal_mode is not a _pragma.
func (s *Store) dsn(path string) string {
	return fileURI(path) + "?_pragma=locking_mode(EXCLUSIVE)&_journal_mode=WAL" +
		"&_pragma=synchronous(" + s.sync + ")&_pragma=busy_timeout(5000)"
}

// path is where room id's database lives: spread over 256 folders so no
// folder holds millions of files.
func (s *Store) path(id string) string {
	return filepath.Join(s.dir, "rooms", id[:2], id+".db")
}

// Room returns the handle for room id (hex, as the rooms package prints
// IDs), recording kind and name in node.db when the room is new. The same
// *Room is returned for the same id until it is closed.
func (s *Store) Room(id, kind, name string) (*Room, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	for s.awaitDeletion(id); ; s.awaitDeletion(id) {
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if _, ok := s.unfinished[id]; !ok {
			break
		}
		s.mu.Unlock()
		if err := s.Delete(id); err != nil {
			return nil, err
		}
		s.mu.Lock()
	}
	if r, ok := s.rooms[id]; ok {
		s.mu.Unlock()
		return r, nil
	}
	// In the map before it opens: a second caller gets this Room, and its
	// first call waits on the Room's lock instead of opening the file twice.
	r := &Room{store: s, id: id, kind: kind, name: name}
	// Locked until its record is in node.db: a Delete that takes r from
	// the map meanwhile closes it only after, so that the deletion removes
	// the record too, and no record is left without its room.
	r.mu.Lock()
	s.rooms[id] = r
	s.mu.Unlock()
	fail := func(err error) (*Room, error) {
		// Closed for good before it leaves the map: a caller that got r
		// from the map meanwhile must not keep a second Room for id open
		// beside the one the next caller gets.
		_ = r.shut(true)
		s.mu.Lock()
		if s.rooms[id] == r {
			delete(s.rooms, id)
		}
		s.mu.Unlock()
		return nil, err
	}
	// A room that wakes again is known: reading its record costs node.db
	// no commit, and the size it holds saves rewriting an unchanged one.
	var recorded int64
	err := s.node.QueryRow(`SELECT bytes FROM rooms WHERE id = ?`, id).Scan(&recorded)
	if errors.Is(err, sql.ErrNoRows) {
		_, err = s.node.Exec(`INSERT OR IGNORE INTO rooms (id, kind, name, created) VALUES (?, ?, ?, ?)`,
			id, kind, name, s.clock.Now().UnixMilli())
	}
	r.setUp = r.setUp || recorded > 0
	r.mu.Unlock()
	if err != nil {
		return fail(fmt.Errorf("storage: node.db: %w", err))
	}
	if err := r.acquire(); err != nil {
		return fail(err)
	}
	// Under the Room's lock: a second caller may have it already.
	r.recorded = recorded
	r.releaseHandle()
	return r, nil
}

// Rooms lists the rooms this node has created, of one kind or ("") all.
func (s *Store) Rooms(kind string) ([]RoomRecord, error) {
	rows, err := s.node.Query(`SELECT id, kind, name, created, bytes FROM rooms WHERE ? = '' OR kind = ? ORDER BY kind, name`, kind, kind)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RoomRecord
	for rows.Next() {
		var rec RoomRecord
		var created int64
		if err := rows.Scan(&rec.ID, &rec.Kind, &rec.Name, &created, &rec.Bytes); err != nil {
			return nil, err
		}
		rec.Created = time.UnixMilli(created)
		out = append(out, rec)
	}
	return out, rows.Err()
}

// Record returns the node.db record of room id, and whether there is one.
func (s *Store) Record(id string) (RoomRecord, bool, error) {
	var rec RoomRecord
	var created int64
	err := s.node.QueryRow(`SELECT id, kind, name, created, bytes FROM rooms WHERE id = ?`, id).
		Scan(&rec.ID, &rec.Kind, &rec.Name, &created, &rec.Bytes)
	if errors.Is(err, sql.ErrNoRows) {
		return RoomRecord{}, false, nil
	}
	rec.Created = time.UnixMilli(created)
	return rec, err == nil, err
}

// awaitDeletion waits, s.mu held, until no Delete of id is running.
func (s *Store) awaitDeletion(id string) {
	for done := s.deleting[id]; done != nil; done = s.deleting[id] {
		s.mu.Unlock()
		<-done
		s.mu.Lock()
	}
}

// Delete removes room id: its handle, its files and its record. node.db
// records the deletion, and drops the room's alarm from its index, in one
// durable commit before any file goes: den killed, or a power cut, at any
// moment after it finishes the deletion when it opens the store again
// (finishDeletions), and never leaves a room half gone for its alarm to
// make anew.
func (s *Store) Delete(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	s.mu.Lock()
	s.awaitDeletion(id)
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	done := make(chan struct{})
	s.deleting[id] = done
	r := s.rooms[id]
	delete(s.rooms, id)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.deleting, id)
		s.mu.Unlock()
		close(done)
	}()
	if r != nil {
		if err := r.Close(); err != nil {
			return err
		}
	}
	return s.finishDeletion(id)
}

// finishDeletion deletes room id, whose handle is closed: it records the
// deletion, removes the files and the record of the room, and then that
// record of its deletion. A try after a failure or a restart records the
// deletion again, so that no file goes before it is on disk. On failure
// the room stays in s.unfinished, for Room to try again.
func (s *Store) finishDeletion(id string) error {
	err := s.commitNode(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT OR IGNORE INTO deletions (id) VALUES (?)`, id); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM alarms WHERE id = ?`, id)
		return err
	})
	p := s.path(id)
	if err == nil {
		// The database first: a WAL left without it is removed by the
		// next try, or by makeFile if a new room takes the name.
		err = removeStale(p, p+"-wal", p+"-shm", p+".new")
	}
	if err == nil {
		// The unlinks are on disk before node.db forgets the deletion: a
		// power cut must not bring the files back with no record of it.
		// Without the folder there were no files.
		if err = syncPath(filepath.Dir(p)); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		// On disk before the room can be made anew: a power cut must not
		// bring the deletion back to take the new room at the next Open.
		err = s.commitNode(func(tx *sql.Tx) error {
			if _, err := tx.Exec(`DELETE FROM rooms WHERE id = ?`, id); err != nil {
				return err
			}
			_, err := tx.Exec(`DELETE FROM deletions WHERE id = ?`, id)
			return err
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.unfinished[id] = struct{}{}
		return fmt.Errorf("storage: deleting room %s: %w", id, err)
	}
	delete(s.unfinished, id)
	return nil
}

// finishDeletions finishes the deletions an earlier process recorded and
// did not finish. One that fails again waits in s.unfinished: the rest
// of the rooms are served meanwhile.
func (s *Store) finishDeletions() error {
	rows, err := s.node.Query(`SELECT id FROM deletions`)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.finishDeletion(id))
	}
	s.openDeletions = errors.Join(errs...)
	return nil
}

// Deleting reports whether room id is being deleted, or its deletion
// failed and is tried again before the room next opens.
func (s *Store) Deleting(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, unfinished := s.unfinished[id]
	return unfinished || s.deleting[id] != nil
}

// UnfinishedDeletions says why deletions that an earlier process recorded
// could not be finished as the store opened, or is nil if all were. Each
// is tried again before its room opens.
func (s *Store) UnfinishedDeletions() error { return s.openDeletions }

// checkID reports an id that cannot name a room's files (path): too
// short, or naming a file outside the room's folder.
func checkID(id string) error {
	if len(id) < 2 || strings.ContainsRune(id, '/') || id[0] == '.' {
		return fmt.Errorf("storage: bad room id %q", id)
	}
	return nil
}

// commitNode runs f in one node.db transaction and makes it durable,
// which with SyncNormal node.db's commits are not.
func (s *Store) commitNode(f func(*sql.Tx) error) error {
	tx, err := s.node.Begin()
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if s.sync == SyncNormal {
		return syncPath(filepath.Join(s.dir, "node.db-wal"))
	}
	return nil
}

// Bytes is room id's database and WAL on disk.
func (s *Store) Bytes(id string) int64 {
	p := s.path(id)
	return fileSize(p) + fileSize(p+"-wal")
}

// OpenHandles is the number of room databases open now.
func (s *Store) OpenHandles() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// Close closes every room and node.db.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed {
		close(s.quit)
	}
	s.closed = true
	s.cond.Broadcast()
	// Deletions in flight finish first: one left running would go on
	// removing files after a Store opened on the folder since made the
	// room anew.
	for len(s.deleting) > 0 {
		for id := range s.deleting {
			s.awaitDeletion(id)
			break
		}
	}
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	var errs []error
	for _, r := range rooms {
		errs = append(errs, r.Close())
	}
	<-s.flushed
	s.flushSizes()
	errs = append(errs, s.node.Close())
	if s.sync == SyncNormal {
		// Rooms close without a checkpoint, so with SyncNormal nothing
		// fsynced their last commits: one syncfs makes a clean shutdown
		// durable, as a checkpoint on every close used to.
		errs = append(errs, s.syncfs())
	}
	return errors.Join(errs...)
}

// syncfs flushes the file systems holding the data folder and its rooms
// folder (which may be a link to another disk) to disk.
func (s *Store) syncfs() error {
	var errs []error
	var done []uint64
	for _, dir := range []string{s.dir, filepath.Join(s.dir, "rooms")} {
		d, err := os.Open(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("storage: %w", err))
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(d.Fd()), &st); err == nil && slices.Contains(done, st.Dev) {
			d.Close()
			continue
		}
		if err := unix.Syncfs(int(d.Fd())); err != nil {
			errs = append(errs, fmt.Errorf("storage: syncfs %s: %w", dir, err))
		}
		done = append(done, st.Dev)
		d.Close()
	}
	return errors.Join(errs...)
}

// reserve makes room in the pool for r's handle, closing the least
// recently used idle handle if the pool is full, or waiting for one to go
// idle. It returns with r at the front of the pool.
func (s *Store) reserve(r *Room) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return ErrClosed
		}
		if s.lru.Len() < s.maxOpen {
			break
		}
		if !s.evictOne(r) {
			s.cond.Wait()
		}
	}
	r.elem = s.lru.PushFront(r)
	return nil
}

// evictOne closes the least recently used handle that is not in use. It
// holds s.mu; a room in use holds its own mu, so TryLock skips it.
func (s *Store) evictOne(except *Room) bool {
	for e := s.lru.Back(); e != nil; e = e.Prev() {
		v := e.Value.(*Room)
		if v == except || !v.mu.TryLock() {
			continue
		}
		if v.inTx {
			v.mu.Unlock()
			continue
		}
		s.lru.Remove(e)
		v.elem = nil
		v.closeHandle()
		v.mu.Unlock()
		return true
	}
	return false
}

// evictIdle closes up to n idle handles other than except's, reporting
// whether it closed any.
func (s *Store) evictIdle(except *Room, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	closed := 0
	for closed < n && s.evictOne(except) {
		closed++
	}
	return closed > 0
}

// touch marks r most recently used, and wakes anyone waiting for a handle
// to give up: r may just have left a transaction.
func (s *Store) touch(r *Room) {
	s.mu.Lock()
	if r.elem != nil {
		s.lru.MoveToFront(r.elem)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// forget takes r's handle out of the pool.
func (s *Store) forget(r *Room) {
	s.mu.Lock()
	if r.elem != nil {
		s.lru.Remove(r.elem)
		r.elem = nil
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// recordSize notes a room's size for the next flush to node.db.
func (s *Store) recordSize(id string, bytes int64) {
	s.sizesMu.Lock()
	s.sizes[id] = bytes
	s.sizesMu.Unlock()
}
