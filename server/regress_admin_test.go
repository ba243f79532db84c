package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
)

// adminRequest sends an admin API request bearing token and returns its
// status and body.
func adminRequest(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRegressAdminRoomOfARetiredKind: a kind taken out of a node's
// configuration leaves its rooms in node.db. The list shows them and
// DELETE removes them, so GET of one answers as the list does, not 404.
func TestRegressAdminRoomOfARetiredKind(t *testing.T) {
	data := t.TempDir()
	first, err := server.New(server.Config{Gateway: gateway.Config{Listen: "127.0.0.1:0"}, Data: data,
		Kinds: []rooms.Kind{whoami}, KeepEmptyRooms: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.DefaultDialer.Dial("ws://"+first.Addr().String()+"/rooms/whoami/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	srv := serveNode(t, server.Config{Gateway: gateway.Config{Listen: "127.0.0.1:0"}, Data: data, AdminToken: "tok"})
	base := "http://" + srv.Addr().String()
	var list []rooms.RoomInfo
	if code, body := adminRequest(t, http.MethodGet, base+"/admin/rooms", "tok"); code != 200 || json.Unmarshal([]byte(body), &list) != nil ||
		len(list) != 1 || list[0].Kind != "whoami" || list[0].State != "evicted" {
		t.Fatalf("list: %d %s, want the whoami room, evicted", code, body)
	}
	var info rooms.RoomInfo
	if code, body := adminRequest(t, http.MethodGet, base+"/admin/rooms/whoami/x", "tok"); code != 200 || json.Unmarshal([]byte(body), &info) != nil ||
		info.State != "evicted" || info.ID != list[0].ID {
		t.Fatalf("GET of a listed room: %d %s, want it as the list shows it", code, body)
	}
	if code, body := adminRequest(t, http.MethodDelete, base+"/admin/rooms/whoami/x", "tok"); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, body := adminRequest(t, http.MethodGet, base+"/admin/rooms/whoami/x", "tok"); code != http.StatusNotFound {
		t.Fatalf("GET once deleted: %d %s, want 404: no room of a kind den does not serve", code, body)
	}
}
