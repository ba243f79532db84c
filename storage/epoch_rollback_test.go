package storage

import (
	"errors"
	"testing"
)

// handleEpoch is the epoch r's writes go out under.
func handleEpoch(r *Room) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch
}

// A Claim inside a transaction that rolls back, whichever way, leaves the
// handle under the epoch the room still has: its writes are fenced as
// that epoch's, not as one the room never recorded.
func TestClaimRolledBackRestoresHandleEpoch(t *testing.T) {
	errHandler := errors.New("the handler failed")
	claim7 := func(r *Room) error {
		if err := r.Claim(7); err != nil {
			t.Fatalf("Claim(7) under epoch 5: %v", err)
		}
		return nil
	}
	for _, c := range []struct {
		name string
		run  func(t *testing.T, r *Room)
		want uint64
	}{
		{"committed", func(t *testing.T, r *Room) {
			if err := r.Transaction(func() error { return claim7(r) }); err != nil {
				t.Fatal(err)
			}
			if err := r.Commit(); err != nil {
				t.Fatal(err)
			}
		}, 7},
		{"savepoint error", func(t *testing.T, r *Room) {
			if err := r.Transaction(func() error { _ = claim7(r); return errHandler }); !errors.Is(err, errHandler) {
				t.Fatalf("Transaction: %v", err)
			}
			if err := r.Commit(); err != nil {
				t.Fatal(err)
			}
		}, 5},
		{"savepoint panic", func(t *testing.T, r *Room) {
			func() {
				defer func() { _ = recover() }()
				_ = r.Transaction(func() error { _ = claim7(r); panic(errHandler) })
			}()
			if err := r.Commit(); err != nil {
				t.Fatal(err)
			}
		}, 5},
		{"nested savepoint, outer one rolled back", func(t *testing.T, r *Room) {
			err := r.Transaction(func() error {
				if err := r.Transaction(func() error { return claim7(r) }); err != nil {
					t.Fatal(err)
				}
				return errHandler
			})
			if !errors.Is(err, errHandler) {
				t.Fatalf("Transaction: %v", err)
			}
			if err := r.Commit(); err != nil {
				t.Fatal(err)
			}
		}, 5},
		{"rollback", func(t *testing.T, r *Room) {
			if err := r.Transaction(func() error { return claim7(r) }); err != nil {
				t.Fatal(err)
			}
			if err := r.Rollback(); err != nil {
				t.Fatal(err)
			}
		}, 5},
		{"failed commit", func(t *testing.T, r *Room) {
			_ = claim7(r)
			// A full disk inside the transaction: SQLite rolls all of it
			// back, and the commit fails.
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				_, err = r.Exec(`INSERT INTO t VALUES (zeroblob(900))`)
			}
			if !errors.Is(err, ErrLimit) {
				t.Fatalf("filling the room: %v, want a limit error", err)
			}
			if err := r.Commit(); err == nil {
				t.Fatal("the commit of a transaction SQLite rolled back succeeded")
			}
		}, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t, Options{Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}})
			r := openRoom(t, s, "ac01")
			if err := r.Claim(5); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Exec(`CREATE TABLE t (b)`); err != nil {
				t.Fatal(err)
			}
			if err := r.Begin(); err != nil {
				t.Fatal(err)
			}
			c.run(t, r)
			stored, err := r.Epoch()
			if err != nil {
				t.Fatal(err)
			}
			if h := handleEpoch(r); stored != c.want || h != c.want {
				t.Fatalf("the room's epoch is %d, the handle writes under %d; want both %d", stored, h, c.want)
			}
		})
	}
}

// An epoch SetEpoch gives the handle after a Claim in the transaction is
// the lease's, not the claim's: the claim's rollback leaves it.
func TestClaimRolledBackKeepsLaterSetEpoch(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "ac02")
	if err := r.Claim(5); err != nil {
		t.Fatal(err)
	}
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := r.Claim(7); err != nil {
		t.Fatal(err)
	}
	r.SetEpoch(9)
	if err := r.Rollback(); err != nil {
		t.Fatal(err)
	}
	if e, err := r.Epoch(); err != nil || e != 5 {
		t.Fatalf("the room's epoch after the rollback: %d %v, want 5", e, err)
	}
	if h := handleEpoch(r); h != 9 {
		t.Fatalf("the handle writes under %d after the rollback, want 9 (SetEpoch's)", h)
	}
}
