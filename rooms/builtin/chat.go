package builtin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/den-rooms/den/rooms"
)

// Chat is a chat room with durable history; its protocol is in DESIGN.md.
// Messages are rows of a SQL table, so ids count from 1 per room and are
// never reused; a message is broadcast only once it is durable.
var Chat = rooms.Kind{Name: "chat", New: newChat}

const (
	chatHistory = 100
	// chatHistoryBytes bounds the history frame a joiner gets: 100 long
	// messages of escaped characters would pass a socket's write queue
	// (1 MiB by default) and close the joiner as a slow consumer before it
	// read anything. The newest messages that fit are sent.
	chatHistoryBytes = 512 << 10
	chatMaxText      = 4096
	chatMaxUser      = 64
	chatMaxLimit     = 1000
	chatMaxDelay     = 365 * 24 * time.Hour
)

type chat struct {
	rooms.Base
	st    *rooms.State
	ready error // the table could not be made
	// anon is the last anonymous number this object handed out, 0 before
	// the first (then it is read: see nextAnon).
	anon int64
}

// message is M of the protocol.
type message struct {
	Type string `json:"type"`
	ID   int64  `json:"id"`
	User string `json:"user"`
	Text string `json:"text"`
	TS   int64  `json:"ts"`
	// Scheduled marks a message sent with schedule, posted when due.
	Scheduled bool `json:"scheduled,omitempty"`
}

func newChat(st *rooms.State) rooms.Handler {
	c := &chat{st: st}
	c.ready = c.makeTable()
	_ = st.SetAutoResponse("ping", "pong")
	return c
}

// makeTable makes the history table, or adds the scheduled column to one
// made before schedule existed. It runs at every wake, so the usual case,
// a table that is already right, costs one short statement: it reads the
// table's CREATE text, which SQLite rewrites when a column is added, from
// the schema it has loaded anyway. pragma_table_info costs a wake more:
// SQLite builds its virtual table afresh on each new connection.
func (c *chat) makeTable() error {
	cur, err := c.st.Storage.Exec(`SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'messages'`)
	if err != nil {
		return err
	}
	switch {
	case !cur.Next():
		_, err = c.st.Storage.Exec(`CREATE TABLE messages (
			id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL,
			scheduled INTEGER NOT NULL DEFAULT 0)`)
	case !strings.Contains(cur.Values()[0].(string), "scheduled"):
		_, err = c.st.Storage.Exec(`ALTER TABLE messages ADD COLUMN scheduled INTEGER NOT NULL DEFAULT 0`)
	}
	return err
}

func (c *chat) Connect(conn *rooms.Connect) error {
	if c.ready != nil {
		return c.ready
	}
	user := chatUser(conn.Identity, conn.Request.URL.Query().Get("user"))
	if len(user) > chatMaxUser || !utf8.ValidString(user) {
		conn.Refuse(http.StatusBadRequest, "user must be UTF-8 of at most 64 bytes")
		return nil
	}
	if user == "" {
		n, err := c.nextAnon()
		if err != nil {
			return err
		}
		user = anonPrefix + strconv.FormatInt(n, 10)
	}
	history, err := c.history(0, chatHistory, true)
	if err != nil {
		return err
	}
	s := conn.Accept()
	if err := s.SetAttachment([]byte(user)); err != nil {
		return err
	}
	s.Send(true, historyFrame(history))
	c.st.Broadcast(true, c.presence("join", user))
	return nil
}

// historyFrame is a joiner's history frame: msgs, or, past
// chatHistoryBytes, the newest of them that fit. Messages are measured
// one by one only then.
func historyFrame(msgs []message) []byte {
	frame := func(ms []message) []byte { return marshal(map[string]any{"type": "history", "messages": ms}) }
	if f := frame(msgs); len(f) <= chatHistoryBytes {
		return f
	}
	return frame(newestWithin(msgs, chatHistoryBytes-len(frame([]message{}))))
}

// newestWithin returns the newest of msgs, oldest first, whose frames
// together take at most budget bytes.
func newestWithin(msgs []message, budget int) []message {
	for i := len(msgs) - 1; i >= 0; i-- {
		if budget -= len(marshal(msgs[i])) + 1; budget < 0 {
			return msgs[i+1:]
		}
	}
	return msgs
}

const anonPrefix = "anon-"

// nextAnon numbers an anonymous user, above every number stored (see
// post) and every number a member still has (its attachment: it may have
// joined before the room last slept), so that no two share a name. It
// writes nothing: a room only visited stores nothing, and den deletes it
// as it leaves memory.
func (c *chat) nextAnon() (int64, error) {
	if c.anon == 0 {
		n, err := c.storedAnon()
		if err != nil {
			return 0, err
		}
		for _, s := range c.st.Sockets("") {
			if m, ok := anonNumber(string(s.Attachment())); ok {
				n = max(n, m)
			}
		}
		c.anon = n
	}
	c.anon++
	return c.anon, nil
}

// storedAnon is the highest anonymous number in the room's history.
func (c *chat) storedAnon() (int64, error) {
	b, _, err := c.st.Storage.Get("anon")
	if err != nil {
		return 0, err
	}
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return n, nil
}

// holdAnon stores n as the highest anonymous number if user is anon-n
// and n is higher, in the event's transaction, so that no later
// anonymous user takes a name the history holds, or will once a
// scheduled message is posted. It reads the stored number each time
// rather than keep it: an event rolled back would leave a kept one ahead
// of the file.
func (c *chat) holdAnon(user string) error {
	n, ok := anonNumber(user)
	if !ok {
		return nil
	}
	stored, err := c.storedAnon()
	if err != nil {
		return err
	}
	if n > stored {
		if err := c.st.Storage.Put("anon", []byte(strconv.FormatInt(n, 10))); err != nil {
			return err
		}
	}
	if c.anon != 0 {
		// A backend may post as anon-n itself.
		c.anon = max(c.anon, n)
	}
	return nil
}

// anonNumber is n of a user named anon-n.
func anonNumber(user string) (int64, bool) {
	v, ok := strings.CutPrefix(user, anonPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

func (c *chat) presence(typ, user string) []byte {
	return marshal(map[string]any{"type": typ, "user": user, "online": len(c.st.Sockets(""))})
}

// history returns messages after id, at most limit; latest picks the
// newest ones, still oldest first.
func (c *chat) history(after int64, limit int, latest bool) ([]message, error) {
	q := `SELECT id, user, text, ts, scheduled FROM messages WHERE id > ? ORDER BY id LIMIT ?`
	if latest {
		q = `SELECT * FROM (SELECT id, user, text, ts, scheduled FROM messages WHERE id > ? ORDER BY id DESC LIMIT ?) ORDER BY id`
	}
	cur, err := c.st.Storage.Exec(q, after, limit)
	if err != nil {
		return nil, err
	}
	out := []message{}
	for cur.Next() {
		v := cur.Values()
		out = append(out, message{Type: "message", ID: v[0].(int64), User: v[1].(string), Text: v[2].(string), TS: v[3].(int64),
			Scheduled: v[4].(int64) != 0})
	}
	return out, nil
}

// post stores a message and broadcasts it.
func (c *chat) post(user, text string, scheduled bool) (message, error) {
	m := message{Type: "message", User: user, Text: text, TS: c.st.Now().UnixMilli(), Scheduled: scheduled}
	if err := c.holdAnon(user); err != nil {
		return m, err
	}
	cur, err := c.st.Storage.Exec(`INSERT INTO messages (user, text, ts, scheduled) VALUES (?, ?, ?, ?) RETURNING id`,
		user, text, m.TS, scheduled)
	if err != nil {
		return m, err
	}
	row, err := cur.One()
	if err != nil {
		return m, err
	}
	m.ID = row["id"].(int64)
	c.st.Broadcast(true, marshal(m))
	return m, nil
}

func checkText(text string) string {
	switch {
	case text == "":
		return "text is empty"
	case len(text) > chatMaxText:
		return "text is over 4096 bytes"
	}
	return ""
}

func (c *chat) Message(s *rooms.Sock, text bool, data []byte) error {
	var in struct {
		Type    string `json:"type"`
		Text    string `json:"text"`
		DelayMS *int64 `json:"delay_ms"`
	}
	if !text {
		s.Send(true, errorFrame("binary messages are not understood"))
		return nil
	}
	if err := json.Unmarshal(data, &in); err != nil {
		reason := "not JSON"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			reason = te.Field + " has the wrong type" // "text": 5, "delay_ms": 1.5
		}
		s.Send(true, errorFrame(reason))
		return nil
	}
	switch in.Type {
	case "message":
		if reason := checkText(in.Text); reason != "" {
			s.Send(true, errorFrame(reason))
			return nil
		}
		_, err := c.post(string(s.Attachment()), in.Text, false)
		return err
	case "schedule":
		if reason := checkText(in.Text); reason != "" {
			s.Send(true, errorFrame(reason))
			return nil
		}
		if in.DelayMS == nil || *in.DelayMS < 0 || *in.DelayMS > chatMaxDelay.Milliseconds() {
			s.Send(true, errorFrame("delay_ms must be 0..31536000000"))
			return nil
		}
		p, _ := json.Marshal(scheduledPost{User: string(s.Attachment()), Text: in.Text})
		if err := c.holdAnon(string(s.Attachment())); err != nil {
			return err
		}
		return c.st.Schedule(c.st.Now().Add(time.Duration(*in.DelayMS)*time.Millisecond), p)
	default:
		s.Send(true, errorFrame("unknown type"))
	}
	return nil
}

// scheduledPost is a schedule command's message while it waits.
type scheduledPost struct {
	User string `json:"user"`
	Text string `json:"text"`
}

// Alarm posts the scheduled messages that are due, in time order.
func (c *chat) Alarm(rooms.AlarmInfo) error {
	due, err := c.st.Due()
	if err != nil {
		return err
	}
	for _, d := range due {
		var p scheduledPost
		if json.Unmarshal(d.Payload, &p) != nil {
			continue
		}
		if _, err := c.post(p.User, p.Text, true); err != nil {
			return err
		}
	}
	return nil
}

func (c *chat) Close(s *rooms.Sock, _ int, _ string, _ bool) error {
	c.st.Broadcast(true, c.presence("leave", string(s.Attachment())), s)
	return nil
}

func (c *chat) Request(w http.ResponseWriter, r *http.Request) error {
	if c.ready != nil {
		return c.ready
	}
	if subpath(c.st, r) != "/messages" {
		http.NotFound(w, r)
		return nil
	}
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		after, err1 := strconv.ParseInt(q.Get("after"), 10, 64)
		limit, err2 := strconv.Atoi(q.Get("limit"))
		if q.Get("after") == "" {
			after, err1 = 0, nil
		}
		if q.Get("limit") == "" {
			limit, err2 = chatHistory, nil
		}
		if err1 != nil || err2 != nil || after < 0 || limit < 1 || limit > chatMaxLimit {
			http.Error(w, "after must be an id and limit 1..1000", http.StatusBadRequest)
			return nil
		}
		ms, err := c.history(after, limit, false)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, ms)
	case http.MethodPost:
		var in struct{ User, Text string }
		dec := json.NewDecoder(r.Body)
		// One JSON value and nothing after it, as over a socket.
		if err := dec.Decode(&in); err != nil || dec.Decode(&struct{}{}) != io.EOF {
			http.Error(w, "want {\"user\":U,\"text\":T}", http.StatusBadRequest)
			return nil
		}
		user := chatUser(rooms.RequestIdentity(r), in.User)
		if reason := checkText(in.Text); reason != "" || len(user) > chatMaxUser || user == "" {
			http.Error(w, "user must be 1..64 bytes and text 1..4096", http.StatusBadRequest)
			return nil
		}
		m, err := c.post(user, in.Text, false)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusCreated, m)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
	return nil
}

// chatUser is the name a joiner or poster goes by: a verified one (the
// token's or the webhook's), cut to chatMaxUser, wins over the one the
// client picked.
func chatUser(id *rooms.Identity, picked string) string {
	if id != nil && id.Name != "" {
		return truncateUTF8(id.Name, chatMaxUser)
	}
	return picked
}

// truncateUTF8 is s cut to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}
