package server_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
)

// A chat room joined and left without a word is deleted as it is
// evicted, and counted in den_room_reclaims_total; with KeepEmptyRooms it
// stays on disk, evicted.
func TestEmptyRoomReclaimed(t *testing.T) {
	for _, keep := range []bool{false, true} {
		n := startMetricsNode(t, func(c *server.Config) { c.KeepEmptyRooms, c.AdminToken = keep, "t" })
		m := scrape(t, n.base)
		c, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/rooms/chat/empty?user=ann", nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // history, join
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		// The room counts as evicted, its storage already deleted, a
		// moment before it stops counting as active.
		m = n.waitFor(t, "the eviction", m, map[string]float64{"den_room_evictions_total": 1})
		for deadline := time.Now().Add(10 * time.Second); m[`den_rooms{state="active"}`] != 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			m = scrape(t, n.base)
		}
		want, reclaims := "absent", 1.0
		if keep {
			want, reclaims = "evicted", 0
		}
		if m["den_room_reclaims_total"] != reclaims || m[`den_rooms{state="active"}`] != 0 || m[`den_rooms{state="hibernated"}`] != 0 {
			t.Errorf("keep %v: den_room_reclaims_total %v, den_rooms %v active, %v hibernated; want %v, 0, 0", keep,
				m["den_room_reclaims_total"], m[`den_rooms{state="active"}`], m[`den_rooms{state="hibernated"}`], reclaims)
		}
		req, _ := http.NewRequest(http.MethodGet, n.base+"/admin/rooms/chat/empty", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var info rooms.RoomInfo
		err = json.NewDecoder(resp.Body).Decode(&info)
		resp.Body.Close()
		if err != nil || info.State != want {
			t.Errorf("keep %v: the admin API says %q (%v), want %s", keep, info.State, err, want)
		}
	}
}
