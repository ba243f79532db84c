package auth

import (
	"container/list"
	"sync"
	"time"
)

// decisionCache keeps webhook decisions for a TTL, at most size of them,
// dropping the oldest first. Keys are hashes of the request body, so the
// cache holds no cookie or header value in the clear. Safe for concurrent
// use.
type decisionCache struct {
	ttl  time.Duration
	size int

	mu    sync.Mutex
	byKey map[[32]byte]*list.Element
	order *list.List // of *cacheEntry, oldest first
}

type cacheEntry struct {
	key     [32]byte
	d       Decision
	expires time.Time
}

func newDecisionCache(ttl time.Duration, size int) *decisionCache {
	return &decisionCache{ttl: ttl, size: size, byKey: make(map[[32]byte]*list.Element), order: list.New()}
}

func (c *decisionCache) get(key [32]byte, now time.Time) (Decision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return Decision{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return Decision{}, false
	}
	return e.d, true
}

func (c *decisionCache) put(key [32]byte, d Decision, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.remove(el)
	}
	// Entries were put in order and share one TTL, so the oldest are the
	// first to expire: dropping from the front frees the stale ones first.
	for front := c.order.Front(); front != nil && !now.Before(front.Value.(*cacheEntry).expires); front = c.order.Front() {
		c.remove(front)
	}
	for c.order.Len() >= c.size {
		c.remove(c.order.Front())
	}
	c.byKey[key] = c.order.PushBack(&cacheEntry{key: key, d: d, expires: now.Add(c.ttl)})
}

func (c *decisionCache) remove(el *list.Element) {
	delete(c.byKey, el.Value.(*cacheEntry).key)
	c.order.Remove(el)
}

func (c *decisionCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
