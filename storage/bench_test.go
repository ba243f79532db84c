package storage

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkEventBatch is the room loop's storage work for one chat
// message: a savepoint around an INSERT ... RETURNING, 100 events to a
// commit, fsync on. It is the part of a durable event SQLite costs.
//
//	go test ./storage -run '^$' -bench EventBatch -cpuprofile cpu.out
func BenchmarkEventBatch(b *testing.B) {
	r := openRoom(b, openStore(b, Options{}), "bb01")
	if _, err := r.Exec(`CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT, text TEXT, ts INTEGER)`); err != nil {
		b.Fatal(err)
	}
	const batch = 100
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		if err := r.Begin(); err != nil {
			b.Fatal(err)
		}
		for j := i; j < min(i+batch, b.N); j++ {
			err := r.Transaction(func() error {
				cur, err := r.Exec(`INSERT INTO messages (user, text, ts) VALUES (?, ?, ?) RETURNING id`, "user", "hello", int64(j))
				if err != nil {
					return err
				}
				_, err = cur.One()
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := r.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReopen is what a room's wake costs storage: its handle opened
// on an existing database and its first write, then closed again as the
// room goes back to sleep. With awake rooms beside it, it shows what
// their open files cost a wake: with SQLite's locking unix VFS, each open
// walked a list of every open file's inode (twice).
//
//	go test ./storage -run '^$' -bench Reopen -cpuprofile cpu.out
func BenchmarkReopen(b *testing.B) {
	for _, awake := range []int{0, 1000, 4000} {
		b.Run(fmt.Sprintf("awake=%d", awake), func(b *testing.B) {
			s := openStore(b, Options{Dir: b.TempDir(), Synchronous: SyncNormal, MaxOpen: awake + 1})
			for i := range awake {
				if err := openRoom(b, s, fmt.Sprintf("cc%04x", i)).Put("k", []byte("v")); err != nil {
					b.Fatal(err)
				}
			}
			r := openRoom(b, s, "bb02")
			if err := r.Put("k", []byte("v")); err != nil {
				b.Fatal(err)
			}
			if err := r.Sleep(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if err := r.Wake(); err != nil {
					b.Fatal(err)
				}
				if err := r.Put("k", []byte("v")); err != nil {
					b.Fatal(err)
				}
				if err := r.Sleep(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreate is what a new room costs storage: its node.db record,
// its file made and set up, its first write, and its sleep.
//
//	go test ./storage -run '^$' -bench Create -benchtime 500x
func BenchmarkCreate(b *testing.B) {
	for _, sync := range []string{SyncNormal, SyncFull} {
		b.Run(sync, func(b *testing.B) {
			s := openStore(b, Options{Dir: b.TempDir(), Synchronous: sync})
			b.ResetTimer()
			for i := range b.N {
				r, err := s.Room(fmt.Sprintf("cc%06x", i), "bench", fmt.Sprint(i))
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Put("k", []byte("v")); err != nil {
					b.Fatal(err)
				}
				if err := r.Sleep(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWakeAfterIdle is BenchmarkReopen as a node sees it: rooms wake
// one at a time, each after the CPU sat idle (idle before each wake), and
// stay awake, so each wake gets memory other rooms gave back as they
// slept. It reports the wake and first write's time, timed apart from the
// idle, and the page faults each took.
//
//	go test ./storage -run '^$' -bench WakeAfterIdle -benchtime 1000x
func BenchmarkWakeAfterIdle(b *testing.B) {
	for _, idle := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run(fmt.Sprintf("idle=%v", idle), func(b *testing.B) {
			const nrooms = 1000
			s := openStore(b, Options{Dir: b.TempDir(), Synchronous: SyncNormal, MaxOpen: nrooms})
			rooms := make([]*Room, nrooms)
			for i := range rooms {
				rooms[i] = openRoom(b, s, fmt.Sprintf("cc%04x", i))
			}
			lat := make([]time.Duration, 0, b.N)
			var faults int64
			b.ResetTimer()
			for i := range b.N {
				r := rooms[i%nrooms]
				if i%nrooms == 0 {
					for _, r := range rooms {
						if err := r.Put("k", []byte("v")); err != nil {
							b.Fatal(err)
						}
						if err := r.Sleep(); err != nil {
							b.Fatal(err)
						}
					}
				}
				time.Sleep(idle)
				f0 := minorFaults(b)
				t0 := time.Now()
				if err := r.Wake(); err != nil {
					b.Fatal(err)
				}
				if err := r.Put("k", []byte("w")); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				faults += minorFaults(b) - f0
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(faults)/float64(b.N), "faults/wake")
		})
	}
}

// minorFaults is the page faults the process has taken that the kernel
// served without reading a disk.
func minorFaults(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Minflt
}
