package storage

// Regressions found in review: ways around the authorizer and the
// transaction, each a test that failed before its fix.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/den-rooms/den/internal/clock"
)

func kvCount(t *testing.T, r *Room) int {
	t.Helper()
	es, err := r.List(ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// Multi-statement Exec: only the first statement is authorized; the rest are
// prepared again at run time with r.author false.
func TestRegressMultiStatementBypass(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa10")
	_ = r.Put("k", []byte("v"))
	for _, q := range []string{
		`SELECT 1; DELETE FROM _den_kv`,
		`; DELETE FROM _den_kv`,
	} {
		_ = r.Put("k", []byte("v"))
		_, err := r.Exec(q)
		t.Logf("%q: err %v, kv entries now %d", q, err, kvCount(t, r))
		if kvCount(t, r) == 0 {
			t.Errorf("%q wiped _den_kv", q)
		}
	}
	_ = r.Claim(5)
	_, err := r.Exec(`SELECT 1; UPDATE _den_meta SET v = 0 WHERE k = 'epoch'`)
	e, _ := r.Epoch()
	t.Logf("epoch after author update: %d (err %v)", e, err)
	if e != 5 {
		t.Errorf("author SQL reset the fencing epoch to %d", e)
	}
	// Transaction control in the tail: commits den's transaction mid-way.
	_ = r.Begin()
	_ = r.Put("in-tx", []byte("x"))
	_, err = r.Exec(`SELECT 1; COMMIT`)
	t.Logf("SELECT 1; COMMIT: %v", err)
	rb := r.Rollback()
	v, ok, _ := r.Get("in-tx")
	t.Logf("after Rollback (%v): in-tx=%q %v", rb, v, ok)
	if ok {
		t.Errorf("author COMMIT inside Exec made den's transaction durable; Rollback: %v", rb)
	}
}

// A cached author statement is re-prepared by SQLite after a schema change
// with r.author == false: no checks.
func TestRegressReprepareBypass(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa11")
	mustExec := func(q string) *Cursor {
		t.Helper()
		c, err := r.Exec(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return c
	}
	_ = r.Put("secret", []byte("s3cr3t"))
	mustExec(`CREATE TABLE t (x)`)
	mustExec(`INSERT INTO t VALUES (1)`) // cached
	mustExec(`CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM _den_kv; END`)
	_, err := r.Exec(`INSERT INTO t VALUES (1)`) // cached statement, re-prepared unchecked
	t.Logf("insert after trigger: %v", err)
	if kvCount(t, r) == 0 {
		t.Errorf("a trigger written by the author deleted _den_kv via a cached statement")
	}

	// Read: swap a table for a view over _den_kv.
	_ = r.Put("secret", []byte("s3cr3t"))
	mustExec(`CREATE TABLE w (key, value)`)
	mustExec(`SELECT * FROM w`)
	mustExec(`DROP TABLE w`)
	mustExec(`CREATE VIEW w AS SELECT key, value FROM _den_kv`)
	c, err := r.Exec(`SELECT * FROM w`)
	if err == nil && c.RowsRead() > 0 {
		t.Errorf("author read _den_kv through a cached statement: %v", c.All())
	}
}

// TEMP objects are not in the reserved-action list.
func TestRegressTempShadow(t *testing.T) {
	s := openStore(t, Options{})
	r := openRoom(t, s, "aa12")
	if err := r.Claim(9); err != nil {
		t.Fatal(err)
	}
	_ = r.Put("k", []byte("durable"))
	if _, err := r.Exec(`CREATE TEMP TABLE _den_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
		t.Logf("temp _den_meta refused: %v", err)
	} else {
		t.Errorf("author created temp._den_meta")
		r.SetEpoch(1) // a stale handle
		if err := r.Put("k", []byte("stale write")); err == nil {
			t.Errorf("stale epoch write succeeded: the epoch check reads temp._den_meta")
		}
	}
	if _, err := r.Exec(`CREATE TEMP TABLE _den_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID`); err == nil {
		t.Errorf("author created temp._den_kv")
		r.SetEpoch(9)
		_ = r.Put("k2", []byte("lost"))
		v, ok, _ := r.Get("k")
		t.Logf("Get(k) after shadowing: %q %v", v, ok)
	}
	// Temp trigger on den's table.
	r2 := openRoom(t, s, "aa13")
	_, _ = r2.Exec(`CREATE TABLE leak (k, v)`)
	_, err := r2.Exec(`CREATE TEMP TRIGGER tt AFTER INSERT ON main._den_kv BEGIN INSERT INTO leak VALUES (new.key, new.value); END`)
	t.Logf("temp trigger on _den_kv: %v", err)
	_ = r2.Put("private", []byte("p"))
	c, _ := r2.Exec(`SELECT * FROM leak`)
	if c != nil && c.RowsRead() > 0 {
		t.Errorf("temp trigger copied den's KV writes into an author table: %v", c.All())
	}
}

func TestRegressTempSizeBypass(t *testing.T) {
	s := openStore(t, Options{Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}})
	r := openRoom(t, s, "aa14")
	if _, err := r.Exec(`CREATE TEMP TABLE big (b)`); !errors.Is(err, ErrReserved) {
		t.Fatalf("CREATE TEMP TABLE: %v, want it refused", err)
	}
}

// SQLITE_FULL inside the event transaction rolls the whole transaction back
// (statement without a statement journal) while r.inTx stays true.
func TestRegressFullRollsBackTx(t *testing.T) {
	s := openStore(t, Options{Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}})
	r := openRoom(t, s, "aa16")
	if err := r.Claim(5); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`CREATE TABLE t (b)`); err != nil {
		t.Fatal(err)
	}
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	_ = r.Put("early", []byte("x"))
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = r.Exec(`INSERT INTO t VALUES (zeroblob(900))`)
	}
	t.Logf("fill: %v", err)
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("want a limit error, got %v", err)
	}
	_, _ = r.Exec(`DELETE FROM t`) // the author recovers space
	_ = r.Put("late", []byte("y"))
	rb := r.Rollback()
	_, early, _ := r.Get("early")
	_, late, _ := r.Get("late")
	t.Logf("Rollback: %v; early=%v late=%v inTx=%v", rb, early, late, r.inTx)
	if late {
		t.Errorf("a write after SQLITE_FULL escaped the event transaction: Rollback could not take it back (%v)", rb)
	}
}

func TestRegressClaimLowersEpochInTx(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa17")
	if err := r.Claim(5); err != nil {
		t.Fatal(err)
	}
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	err := r.Claim(3)
	if cerr := r.Commit(); cerr != nil {
		t.Fatal(cerr)
	}
	e, _ := r.Epoch()
	if err == nil || e != 5 {
		t.Errorf("Claim(3) under epoch 5 inside Begin: err %v, room epoch now %d", err, e)
	}
}

func TestRegressRowsWrittenDDL(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa18")
	_, _ = r.Exec(`CREATE TABLE a (x)`)
	_, _ = r.Exec(`INSERT INTO a VALUES (1),(2),(3)`)
	c, err := r.Exec(`CREATE TABLE b (x)`)
	if err != nil {
		t.Fatal(err)
	}
	if c.RowsWritten() != 0 {
		t.Errorf("CREATE TABLE reports RowsWritten %d", c.RowsWritten())
	}
}

func TestRegressListFF(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa19")
	keys := []string{"\xfe", "\xff", "\xff\x00", "\xff\xff", "\xff\xff\x01", "a\xff", "a\xff\x01", "b"}
	for _, k := range keys {
		if err := r.Put(k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for p, want := range map[string]int{"\xff": 4, "\xff\xff": 2, "a\xff": 2, "a": 2} {
		es, err := r.List(ListOptions{Prefix: p})
		if err != nil || len(es) != want {
			t.Errorf("prefix %q: %d entries (%v), want %d", p, len(es), err, want)
		}
		for _, e := range es {
			t.Logf("prefix %q: %q", p, e.Key)
		}
	}
}

func TestRegressTempShadow2(t *testing.T) {
	for _, q := range []string{
		`CREATE TEMP TABLE _den_meta (k, v)`,
		`CREATE TEMP VIEW _den_meta AS SELECT 'epoch' AS k, 0 AS v`,
	} {
		s := openStore(t, Options{})
		r := openRoom(t, s, "aa20")
		if err := r.Claim(9); err != nil {
			t.Fatal(err)
		}
		_ = r.Put("k", []byte("owner 9"))
		if _, err := r.Exec(q); err != nil {
			t.Logf("%s: refused %v", q, err)
			continue
		}
		r.SetEpoch(1)
		if err := r.Put("k", []byte("stale write")); err == nil {
			v, _, _ := r.Get("k")
			t.Errorf("%s: then a write under stale epoch 1 succeeded; k=%q", q, v)
		}
	}
	s := openStore(t, Options{})
	r := openRoom(t, s, "aa21")
	_ = r.Put("k", []byte("v"))
	if _, err := r.Exec(`CREATE TEMP TABLE _den_kv (key, value)`); err == nil {
		_ = r.Put("new", []byte("x"))
		_, okOld, _ := r.Get("k")
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		r = openRoom(t, s, "aa21")
		_, okNew, _ := r.Get("new")
		t.Errorf("temp._den_kv shadows den's KV: old key visible=%v; Put after it survives reopen=%v", okOld, okNew)
	}
}

func TestRegressTailFileWrite(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa30")
	out := filepath.Join(t.TempDir(), "escape.db")
	_, err := r.Exec(`VACUUM INTO '` + out + `'`)
	t.Logf("plain VACUUM INTO: %v", err)
	_, err = r.Exec(`SELECT 1; COMMIT; VACUUM INTO '` + out + `'`)
	t.Logf("tail VACUUM INTO: %v", err)
	if _, serr := os.Stat(out); serr == nil {
		t.Errorf("author SQL wrote a copy of the room (with _den_kv) to %s", out)
	}
	att := filepath.Join(t.TempDir(), "attached.db")
	_, err = r.Exec(`SELECT 1; COMMIT; ATTACH '` + att + `' AS x; CREATE TABLE x.t(a)`)
	t.Logf("tail ATTACH: %v", err)
	if _, serr := os.Stat(att); serr == nil {
		t.Errorf("author SQL attached and created %s", att)
	}
}

func TestRegressDeleteAllFTS(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa31")
	for _, q := range []string{`CREATE VIRTUAL TABLE f USING fts5(x)`, `INSERT INTO f VALUES ('hello')`} {
		if _, err := r.Exec(q); err != nil {
			t.Skipf("%s: %v", q, err)
		}
	}
	if err := r.DeleteAll(); err != nil {
		t.Errorf("DeleteAll with an fts5 table: %v", err)
	}
	c, _ := r.Exec(`SELECT name FROM sqlite_schema WHERE name NOT LIKE '\_den\_%' ESCAPE '\'`)
	if c != nil && c.RowsRead() > 0 {
		t.Errorf("left: %v", c.All())
	}
}

// The event loop's shape: Begin, a savepoint per event, Commit.
func TestRegressFullInEventLoop(t *testing.T) {
	s := openStore(t, Options{Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}})
	r := openRoom(t, s, "aa32")
	_ = r.Claim(5)
	if _, err := r.Exec(`CREATE TABLE t (b)`); err != nil {
		t.Fatal(err)
	}
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	e1 := r.Transaction(func() error {
		for {
			if _, err := r.Exec(`INSERT INTO t VALUES (zeroblob(900))`); err != nil {
				return err
			}
		}
	})
	_, _ = r.Exec(`DELETE FROM t`)
	e2 := r.Transaction(func() error { return r.Put("ev2", []byte("x")) })
	e3 := r.Transaction(func() error { _ = r.Put("ev3", []byte("x")); return errors.New("fails") })
	ce := r.Commit()
	_, ok2, _ := r.Get("ev2")
	_, ok3, _ := r.Get("ev3")
	t.Logf("ev1 %v\nev2 %v\nev3 %v\ncommit %v\nev2 stored %v, ev3 (failed event) stored %v", e1, e2, e3, ce, ok2, ok3)
	if ce != nil && ok2 {
		t.Errorf("Commit failed but event 2's write is durable")
	}
}

// TestRegressReserveWakes holds the only handle in a transaction: a second
// room waits for it, and must go on when the transaction ends.
func TestRegressReserveWakes(t *testing.T) {
	s := openStore(t, Options{MaxOpen: 1})
	a, b := openRoom(t, s, "ab01"), openRoom(t, s, "ab02")
	if err := a.Begin(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := b.Get("k")
		done <- err
	}()
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second room never got the handle after the transaction ended")
	}
}

func TestRegressConcurrentOpenOfOneRoom(t *testing.T) {
	s := openStore(t, Options{})
	var wg sync.WaitGroup
	rooms := make([]*Room, 4)
	errs := make([]error, 4)
	for i := range rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rooms[i], errs[i] = s.Room("ab03", "k", "n")
		}()
	}
	wg.Wait()
	for i := range rooms {
		if errs[i] != nil || rooms[i] != rooms[0] {
			t.Fatalf("open %d: %v; want one *Room for every caller", i, errs[i])
		}
	}
	if err := rooms[0].Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// TestRowsWrittenOnRepeat runs the same statements again: the second run
// takes the cached Exec path and must count the same.
func TestRowsWrittenOnRepeat(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "ab04")
	if _, err := r.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatal(err)
	}
	for run := range 3 {
		c, err := r.Exec(`INSERT INTO t VALUES (?), (?)`, run+100, run+100)
		if err != nil || c.RowsWritten() != 2 {
			t.Fatalf("run %d: written %v, err %v", run, c, err)
		}
		c, err = r.Exec(`UPDATE t SET x = -1 WHERE x = ?`, run+100)
		if err != nil || c.RowsWritten() != 2 {
			t.Fatalf("run %d update: %v %v", run, c, err)
		}
	}
	if _, err := r.Exec(`SELECT * FROM _den_kv`); !errors.Is(err, ErrReserved) {
		t.Fatalf("a reserved table: %v", err)
	}
}

// A reopened database must not get a -shm file: with the journal mode
// set before exclusive locking it did, and each room cost three
// descriptors instead of two.
func TestRegressReopenedRoomHasNoSHM(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	for i := range 2 {
		r := openRoom(t, s, "cc01")
		if err := r.Put("k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		shm, _ := filepath.Glob(filepath.Join(dir, "rooms", "*", "*-shm"))
		if len(shm) > 0 {
			t.Fatalf("open %d: %v exists", i+1, shm)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if shm, _ := filepath.Glob(filepath.Join(dir, "rooms", "*", "*-shm")); len(shm) > 0 {
			t.Fatalf("close %d: %v exists", i+1, shm)
		}
	}
}

// A room that sleeps and wakes without writing must not cost node.db a
// write each time: each wake is a new *Room, which learns the recorded
// size from node.db instead of starting from zero.
func TestRegressSleepWithoutWriteLeavesNodeDB(t *testing.T) {
	// A fake clock: the once-a-second flush of sizes must not write
	// during the test.
	s := openStore(t, Options{Clock: clock.NewFake(time.Now())})
	r := openRoom(t, s, "ab01")
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	changes := func() int64 {
		var n int64
		if err := s.node.QueryRow(`SELECT total_changes()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := changes()
	for i := range 3 {
		r, err := s.Room("ab01", "k", "n")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.Get("k"); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if got := changes(); got != before {
			t.Fatalf("wake and sleep %d without a write changed %d rows of node.db", i+1, got-before)
		}
	}
}

// When the process is out of descriptors (sockets share the limit with
// the pool), opening a room makes idle rooms give their handles up
// instead of failing, however large the pool's own bound.
func TestRoomOpensAtTheFileLimit(t *testing.T) {
	s := openStore(t, Options{MaxOpen: 1000})
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// Room for a handful of databases beside what the process holds.
	lim := old
	lim.Cur = uint64(openFiles(t) + 12)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	for i := range 40 {
		r, err := s.Room(fmt.Sprintf("fd%02d", i), "test", "n")
		if err == nil {
			err = r.Put("k", []byte("v"))
		}
		if err != nil {
			t.Fatalf("room %d of 40 with descriptors for a few: %v", i+1, err)
		}
	}
	if n := s.OpenHandles(); n >= 40 {
		t.Fatalf("%d handles open under a limit that fits a few", n)
	}
}

// Closing a store from several goroutines at once is safe.
func TestRegressConcurrentStoreClose(t *testing.T) {
	for range 50 {
		s, err := Open(Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_ = s.Close()
			}()
		}
		close(start)
		wg.Wait()
	}
}

// A wake beside another connection holding the file (a sqlite3 shell, a
// second process) waits for it. It once failed at once with SQLITE_BUSY,
// when the busy timeout came after the first pragma that reads the file;
// the wait is now den's own lock's (lockFile).
func TestRegressWakeWaitsForLock(t *testing.T) {
	s := openStore(t, Options{})
	r := openRoom(t, s, "ab20")
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	other := sleepAndHold(t, s, r)
	woke := make(chan error, 1)
	go func() { woke <- r.Wake() }()
	select {
	case err := <-woke:
		t.Fatalf("the wake did not wait for the lock: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil {
		t.Fatalf("the wake failed once the lock was free: %v", err)
	}
	if v, _, err := r.Get("k"); err != nil || string(v) != "v" {
		t.Fatalf("after the wait k = %q, %v", v, err)
	}
}

// VACUUM shows the authorizer no action at all, so it passed for a
// statement that only reads and ran outside any transaction, unfenced.
func TestRegressVacuumIsFenced(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "ab21")
	if err := r.Claim(5); err != nil {
		t.Fatal(err)
	}
	r.SetEpoch(4)
	if _, err := r.Exec(`VACUUM`); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("VACUUM under a stale epoch: %v, want ErrStaleEpoch", err)
	}
}

// Through sqlite_dbpage a room's SQL could put back the page that held
// the epoch before a Claim, and a handle under the older epoch could
// write again.
func TestRegressRawPagesCannotRewindEpoch(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "ab22")
	if err := r.Claim(3); err != nil {
		t.Fatal(err)
	}
	const page = `(SELECT rootpage FROM sqlite_schema WHERE name = '_den_meta')`
	_, snapErr := r.Exec(`CREATE TABLE snap AS SELECT data FROM sqlite_dbpage WHERE pgno = ` + page)
	if err := r.Claim(5); err != nil {
		t.Fatal(err)
	}
	if snapErr == nil {
		_, _ = r.Exec(`UPDATE sqlite_dbpage SET data = (SELECT data FROM snap) WHERE pgno = ` + page)
	}
	r.SetEpoch(4)
	if err := r.Put("k", []byte("stale")); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("Put under epoch 4 after Claim(5): %v, want ErrStaleEpoch (snapshot: %v)", err, snapErr)
	}
}

// A room node.db knows (it has slept, so node.db holds its size) whose
// folder is gone when den starts again (removed by hand, or a data folder
// restored without it) opens as a new room, as it did before new files
// were copied into place: the copy makes the folder.
func TestRegressKnownRoomWhoseFolderIsGone(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	r := openRoom(t, s, "aa40")
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // records the room's size in node.db
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(s.path("aa40"))); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Options{Dir: dir})
	r, err := s.Room("aa40", "test", "n")
	if err != nil {
		t.Fatalf("a known room whose folder is gone: %v", err)
	}
	if err := r.Put("k", []byte("again")); err != nil {
		t.Fatal(err)
	}
}

// Store.Room returns one *Room per id until it is closed. A caller that
// finds the Room in the map while its first open runs gets it at once;
// when that open fails, the Room is closed before it leaves the map, so
// that caller cannot hold the file open under a second Room beside the
// one the next caller gets.
func TestRegressOneRoomPerIDAfterAFailedOpen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	// Any failure of the first open does; here the empty room image
	// cannot be made (a folder where it goes).
	img := filepath.Join(dir, "rooms", ".empty-room.db")
	if err := os.MkdirAll(filepath.Join(img, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   *Room
		err error
	}
	s.emptyMu.Lock() // holds A's first open before it fails
	a := make(chan result, 1)
	go func() { r, err := s.Room("aa60", "test", "n"); a <- result{r, err} }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		_, inMap := s.rooms["aa60"]
		s.mu.Unlock()
		if inMap {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A's Room never reached the map")
		}
	}
	// B asks for the room while A opens it, and gets A's Room.
	rb, err := s.Room("aa60", "test", "n")
	s.emptyMu.Unlock()
	if ra := <-a; ra.err == nil {
		t.Fatal("A's open did not fail")
	}
	if err := os.RemoveAll(img); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	if err := rb.Put("k", []byte("B")); !errors.Is(err, ErrClosed) {
		t.Fatalf("B's Room after A's open failed: Put = %v, want ErrClosed", err)
	}
	rc, err := s.Room("aa60", "test", "n")
	if err != nil {
		t.Fatalf("C, after the failed open: %v", err)
	}
	if err := rc.Put("k", []byte("C")); err != nil {
		t.Fatalf("C's Room: %v", err)
	}
}

// SQL that rolls back the whole transaction (INSERT OR ROLLBACK, a
// trigger's RAISE(ROLLBACK)) fails the batch: no event after it may write
// on its own while the batch is reported failed.
func TestRegressStatementRollbackFailsTheBatch(t *testing.T) {
	for _, c := range []struct{ name, setup, bad string }{
		{"insert or rollback", ``, `INSERT OR ROLLBACK INTO t VALUES (1)`},
		{"raise rollback", `CREATE TRIGGER no_twos BEFORE INSERT ON t WHEN new.x = 2 BEGIN SELECT RAISE(ROLLBACK, 'no twos'); END`,
			`INSERT INTO t VALUES (2)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := openRoom(t, openStore(t, Options{}), "ro01")
			for _, q := range []string{`CREATE TABLE t (x PRIMARY KEY)`, `INSERT INTO t VALUES (1)`, c.setup} {
				if q == "" {
					continue
				}
				if _, err := r.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Begin(); err != nil {
				t.Fatal(err)
			}
			e0 := r.Transaction(func() error { return r.Put("ev0", []byte("x")) })
			e1 := r.Transaction(func() error {
				_, err := r.Exec(c.bad)
				return err
			})
			e2 := r.Transaction(func() error { return r.Put("ev2", []byte("x")) })
			if e0 != nil || e1 == nil {
				t.Fatalf("event 0: %v, event 1: %v; want nil and an error", e0, e1)
			}
			if err := r.Commit(); err == nil {
				t.Fatal("Commit succeeded after SQLite rolled the transaction back")
			}
			for _, k := range []string{"ev0", "ev2"} {
				if _, ok, _ := r.Get(k); ok {
					t.Fatalf("%s is stored after its batch failed (event 2: %v)", k, e2)
				}
			}
		})
	}
}

// A crash while a room is deleted can leave its WAL without its
// database. The room made again in its place must start empty and whole:
// SQLite would replay that WAL onto the new file, bringing the deleted
// room back, or corrupting the file when the WAL's pages assume a
// database that was checkpointed before.
func TestRegressWALWithoutDatabaseNotReplayed(t *testing.T) {
	for _, c := range []struct {
		name  string
		write func(t *testing.T, r *Room)
	}{
		{"commits in the WAL", func(t *testing.T, r *Room) {
			for i := range 5 {
				if err := r.Put(fmt.Sprintf("secret%d", i), []byte("deleted")); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"checkpointed, then more in the WAL", func(t *testing.T, r *Room) {
			if err := r.Begin(); err != nil {
				t.Fatal(err)
			}
			for i := range 300 {
				if err := r.Put(fmt.Sprintf("k%03d", i), make([]byte, 1000)); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Commit(); err != nil {
				t.Fatal(err)
			}
			// Past walKeepBytes: the sleep checkpoints and truncates.
			if err := r.Sleep(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 300; i += 50 {
				if err := r.Put(fmt.Sprintf("k%03d", i), []byte("updated")); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Room("wa01", "k", "n")
			if err != nil {
				t.Fatal(err)
			}
			c.write(t, r)
			if err := r.Sleep(); err != nil {
				t.Fatal(err)
			}
			path := s.path("wa01")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if fileSize(path+"-wal") == 0 {
				t.Fatal("no WAL kept over the sleep")
			}
			// Where a crash in Delete stops: the database gone, its WAL not.
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, Options{Dir: dir})
			r = openRoom(t, s, "wa01")
			var check string
			if err := r.use(func() error {
				return r.conn.QueryRowContext(bg, `PRAGMA integrity_check`).Scan(&check)
			}); err != nil || check != "ok" {
				t.Fatalf("integrity_check: %.80q %v", check, err)
			}
			if es, err := r.List(ListOptions{}); err != nil || len(es) != 0 {
				t.Fatalf("the new room holds %d entries (%v), want none", len(es), err)
			}
			if err := r.Put("x", []byte("y")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A room opened while Delete removes it waits for the deletion, then
// starts anew with a record: it is never left live, with its file, but
// without its record in node.db.
func TestRegressRoomOpenedDuringDeleteKeepsItsRecord(t *testing.T) {
	s := openStore(t, Options{})
	for i := range 100 {
		id := fmt.Sprintf("dr%04d", i)
		r := openRoom(t, s, id)
		if err := r.Put("old", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := r.Sleep(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var again *Room
		var openErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := s.Delete(id); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			// Spread over the deletion's steps.
			time.Sleep(time.Duration(i%20) * 20 * time.Microsecond)
			again, openErr = s.Room(id, "test", "name-"+id)
		}()
		wg.Wait()
		if openErr != nil {
			t.Fatal(openErr)
		}
		if err := again.Put("new", []byte("y")); err != nil {
			continue // deleted after it opened: the handle is gone
		}
		if _, ok, err := s.Record(id); err != nil || !ok {
			t.Fatalf("room %s, opened while it was deleted, is live and written but has no record (%v)", id, err)
		}
		_ = again.Close()
	}
}

// A room's author may add, rename and drop columns of its own tables, not
// of den's; a table may not be renamed, as the new name could be den's.
func TestAlterTable(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa40")
	if _, err := r.Exec(`CREATE TABLE t (x, y, z)`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE t ADD COLUMN w`, `ALTER TABLE t RENAME COLUMN x TO x2`, `ALTER TABLE t DROP COLUMN y`} {
		if _, err := r.Exec(q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	cur, err := r.Exec(`SELECT group_concat(name) FROM pragma_table_info('t')`)
	if err != nil || !cur.Next() || cur.Values()[0] != "x2,z,w" {
		t.Errorf("t's columns after the changes: %v (%v), want x2,z,w", cur.Values(), err)
	}
	for q, want := range map[string]error{
		`ALTER TABLE t RENAME TO t2`:                 ErrRenameTable,
		`ALTER TABLE t RENAME TO _den_x`:             ErrRenameTable,
		`ALTER TABLE _den_kv RENAME COLUMN key TO k`: ErrReserved,
		`ALTER TABLE _den_kv DROP COLUMN value`:      ErrReserved,
		`ALTER TABLE _den_kv ADD COLUMN extra`:       ErrReserved,
		`CREATE TEMP TABLE tt (a)`:                   ErrReserved,
	} {
		if _, err := r.Exec(q); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", q, err, want)
		}
	}
}

// A scheduled event does not come due before its time: TakeDue at a now
// before at leaves it pending.
func TestScheduleNotDueEarly(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "ab01")
	base := time.UnixMilli(1_700_000_000_000)
	at := base.Add(1500 * time.Microsecond)
	if err := r.Schedule(at, []byte("x")); err != nil {
		t.Fatal(err)
	}
	now := base.Add(1200 * time.Microsecond)
	es, err := r.TakeDue(now, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Fatalf("event scheduled for %v taken at %v (%v early); its At reads %v",
			at.Format(time.StampMicro), now.Format(time.StampMicro), at.Sub(now), es[0].At.Format(time.StampMicro))
	}
}

// node.db's index keeps an alarm's time as the room does, rounded up to
// the millisecond: rounded down, an alarm indexed at T+1.5 ms was loaded
// at a restart for T+1 ms, and fired a wake that found nothing due.
func TestAlarmIndexedAsTheRoomKeepsIt(t *testing.T) {
	s := openStore(t, Options{})
	r := openRoom(t, s, "ab02")
	at := time.UnixMilli(1_700_000_000_000).Add(1500 * time.Microsecond)
	if err := r.SetAlarm(at, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.IndexAlarm(r.ID(), "k", "n", at); err != nil {
		t.Fatal(err)
	}
	stored, _, ok, err := r.Alarm()
	if err != nil || !ok {
		t.Fatalf("the room's alarm: %v %v", ok, err)
	}
	entries, err := s.Alarms()
	if err != nil || len(entries) != 1 {
		t.Fatalf("the index: %v %v", entries, err)
	}
	if !entries[0].At.Equal(stored) {
		t.Fatalf("indexed at %v, the room keeps %v", entries[0].At.Format(time.StampMicro), stored.Format(time.StampMicro))
	}
}
