package storage

import (
	"bufio"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// padWAL pads a room's WAL only under the room file's lock. Another
// SQLite user (a sqlite3 shell, say: the case busyTimeout and ErrFileBusy
// exist for) appending frames to the WAL while den tries to wake the room
// must not have its commits overwritten with zeros, as they were when the
// pad measured the WAL, the other process committed past that length, and
// the pad wrote zeros from the old length on. Here a child process commits
// rows (its WAL kept under walKeepBytes by TRUNCATE checkpoints) and
// checks each time, through a second connection, that every row it
// committed is still there, while the parent tries to open the room, which
// fails with ErrFileBusy each time.
func TestPadLeavesAnotherWritersFramesAlone(t *testing.T) {
	if db := os.Getenv("DEN_PAD_WRITER_DB"); db != "" {
		fmt.Println(padRaceWriter(db, 4*time.Second))
		os.Exit(0)
	}
	old := busyTimeout
	busyTimeout = 0
	t.Cleanup(func() { busyTimeout = old })
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir, Synchronous: SyncFull})
	const id = "ad01"
	r := openRoom(t, s, id)
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := testChild(t, "TestPadLeavesAnotherWritersFramesAlone", "DEN_PAD_WRITER_DB="+s.path(id))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child did not start: %q", sc.Text())
	}
	done := make(chan string, 1)
	go func() {
		var rest []string
		for sc.Scan() {
			rest = append(rest, sc.Text())
		}
		done <- strings.Join(rest, "\n")
	}()
	tries, busy := 0, 0
	var result string
loop:
	for {
		select {
		case result = <-done:
			break loop
		default:
		}
		tries++
		r, err := s.Room(id, "test", "name-"+id)
		switch {
		case errors.Is(err, ErrFileBusy):
			busy++
		case err == nil:
			_ = r.Close()
		default:
			t.Logf("open: %v", err)
		}
	}
	_ = cmd.Wait()
	t.Logf("%d opens tried (%d busy); child: %s", tries, busy, result)
	if !strings.HasPrefix(result, "ok ") {
		t.Fatalf("another process's committed rows were damaged while den tried to open the room: %s", result)
	}
}

// padRaceWriter commits rows into the database at path for d, keeping its
// WAL short, and reports the first committed row it cannot read back.
func padRaceWriter(path string, d time.Duration) string {
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=synchronous(OFF)&_pragma=wal_autocheckpoint(0)"
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return "ERR " + err.Error()
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	rd, err := sql.Open("sqlite", dsn)
	if err != nil {
		return "ERR " + err.Error()
	}
	defer rd.Close()
	rd.SetMaxOpenConns(1)
	if _, err := w.Exec(`CREATE TABLE IF NOT EXISTS pad_race (i INTEGER PRIMARY KEY, v BLOB NOT NULL)`); err != nil {
		return "ERR " + err.Error()
	}
	fmt.Println("ready")
	end := time.Now().Add(d)
	n := 0
	for time.Now().Before(end) {
		n++
		if _, err := w.Exec(`INSERT INTO pad_race (i, v) VALUES (?, randomblob(300))`, n); err != nil {
			return fmt.Sprintf("LOST insert %d: %v", n, err)
		}
		if n%6 == 0 {
			if _, err := w.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				return fmt.Sprintf("LOST checkpoint after %d: %v", n, err)
			}
		}
		var got, sum int64
		if err := rd.QueryRow(`SELECT count(*), coalesce(sum(i), 0) FROM pad_race`).Scan(&got, &sum); err != nil {
			return fmt.Sprintf("LOST after commit %d: %v", n, err)
		}
		if got != int64(n) || sum != int64(n)*int64(n+1)/2 {
			return fmt.Sprintf("LOST after commit %d: %d rows (sum %d) read back", n, got, sum)
		}
	}
	var ic string
	if err := rd.QueryRow(`PRAGMA integrity_check`).Scan(&ic); err != nil || ic != "ok" {
		return fmt.Sprintf("LOST integrity after %d commits: %q %v", n, ic, err)
	}
	return fmt.Sprintf("ok %d commits", n)
}
