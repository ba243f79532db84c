package rooms

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Rooms woken at the same moment from different event loops must not
// pass MaxActive together: each claim checks and counts in one step.
func TestClaimActiveNeverPassesLimit(t *testing.T) {
	const limit, claimers = 4, 16
	rt := &Runtime{maxActive: limit}
	for round := range 200 {
		rt.awake.Store(0)
		var won atomic.Int64
		var ready, wg sync.WaitGroup
		start := make(chan struct{})
		ready.Add(claimers)
		wg.Add(claimers)
		for range claimers {
			go func() {
				defer wg.Done()
				ready.Done()
				<-start
				if rt.claimActive() {
					won.Add(1)
				}
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()
		if won.Load() != limit || rt.awake.Load() != limit {
			t.Fatalf("round %d: %d claims won, %d rooms counted awake; want %d and %d", round, won.Load(), rt.awake.Load(), limit, limit)
		}
	}
}
