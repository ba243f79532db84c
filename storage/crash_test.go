package storage

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Crash safety: a child commits numbered KV writes in rooms that sleep
// and wake (handles close and reopen, the WAL persists), printing each
// number once Commit returned; the parent SIGKILLs it and checks that
// every printed commit is there after reopening.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("DEN_CRASH_DIR")
	if dir == "" {
		t.Skip("child only")
	}
	s, err := Open(Options{Dir: dir, MaxOpen: 2})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	pfx := os.Getenv("DEN_CRASH_PREFIX")
	for n := 1; ; n++ {
		id := fmt.Sprintf("cr%02d", n%5)
		r, err := s.Room(id, "k", "n")
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		if err := r.Begin(); err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		for j := range 3 {
			if err := r.Put(fmt.Sprintf("%sk%d-%d", pfx, n, j), make([]byte, 1000+n%3000)); err != nil {
				fmt.Println("ERR", err)
				os.Exit(2)
			}
		}
		if err := r.Commit(); err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		fmt.Fprintln(w, n)
		w.Flush()
		if n%7 == 0 {
			_ = r.Close() // the room sleeps: its WAL stays
		}
	}
}

// TestCommitsSurviveSIGKILL kills a child that commits in rooms whose
// handles close and reopen (the WAL persists between them) at a random
// moment, four times a round: every commit it reported is there after.
func TestCommitsSurviveSIGKILL(t *testing.T) {
	for round := range 4 {
		dir := t.TempDir()
		for kill := range 4 {
			cmd := testChild(t, "TestCrashChild", "DEN_CRASH_DIR="+dir, fmt.Sprintf("DEN_CRASH_PREFIX=p%d-", kill))
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			last := 0
			deadline := time.Now().Add(time.Duration(50+round*37+kill*23) * time.Millisecond)
			for sc.Scan() {
				if n, err := strconv.Atoi(sc.Text()); err == nil {
					last = n
				} else if len(sc.Text()) > 3 && sc.Text()[:3] == "ERR" {
					t.Fatalf("child: %s", sc.Text())
				}
				if time.Now().After(deadline) && last > 0 {
					break
				}
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			// Every commit the child reported must survive.
			s, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			for n := 1; n <= last; n++ {
				r, err := s.Room(fmt.Sprintf("cr%02d", n%5), "k", "n")
				if err != nil {
					t.Fatal(err)
				}
				for j := range 3 {
					if _, ok, err := r.Get(fmt.Sprintf("p%d-k%d-%d", kill, n, j)); err != nil || !ok {
						t.Fatalf("round %d kill %d: commit %d of %d lost (err %v)", round, kill, n, last, err)
					}
				}
			}
			shm, _ := filepath.Glob(filepath.Join(dir, "rooms", "*", "*-shm"))
			if len(shm) > 0 {
				t.Errorf("-shm files: %v", shm)
			}
			s.Close()
			// The next child writes in the same folder, under keys of its own.
			t.Logf("round %d kill %d: %d commits verified", round, kill, last)
		}
	}
}
