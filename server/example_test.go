package server_test

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/server"
)

// guestbook is a room kind of the user's own: it greets each visitor with
// the number of visitors before them, and keeps the count durably.
type guestbook struct {
	rooms.Base
	st *rooms.State
}

func (g *guestbook) Connect(c *rooms.Connect) error {
	b, _, err := g.st.Storage.Get("visits")
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(string(b))
	if err := g.st.Storage.Put("visits", []byte(strconv.Itoa(n+1))); err != nil {
		return err
	}
	c.Accept().SendText(fmt.Sprintf("welcome to %s, visitor %d", g.st.Name, n+1))
	return nil
}

func (g *guestbook) Message(s *rooms.Sock, text bool, data []byte) error {
	g.st.Broadcast(text, data, s) // to everyone else
	return nil
}

// Example runs den with a kind of one's own, as a main package would.
func Example() {
	data, _ := os.MkdirTemp("", "den-example")
	defer os.RemoveAll(data)
	srv, err := server.New(server.Config{
		Gateway: gateway.Config{Listen: "127.0.0.1:0"},
		Data:    data,
		Kinds:   []rooms.Kind{{Name: "guestbook", New: func(st *rooms.State) rooms.Handler { return &guestbook{st: st} }}},
	})
	if err != nil {
		panic(err)
	}
	if err := srv.Start(); err != nil {
		panic(err)
	}
	defer srv.Shutdown(context.Background())

	for range 2 {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+srv.Addr().String()+"/rooms/guestbook/lobby", nil)
		if err != nil {
			panic(err)
		}
		_, msg, _ := c.ReadMessage()
		fmt.Println(string(msg))
		c.Close()
	}
	// Output:
	// welcome to lobby, visitor 1
	// welcome to lobby, visitor 2
}
