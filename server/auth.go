package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/den-rooms/den/auth"
	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
)

// guard is the gateway's Rooms with who-may-connect in front: a join
// reaches its room only with a valid token (when tokens are configured)
// and the connect webhook's consent (when it is), and the room sees who
// the client is. Everything else passes straight through.
type guard struct {
	gateway.Rooms
	verifier *auth.Verifier // nil: tokens are not checked
	required bool           // a join without a token is refused
	webhook  *auth.Webhook  // nil: no webhook
	inflight chan struct{}  // bounds the webhook calls at once
	baseCtx  context.Context
	log      *zap.Logger
}

// Join checks the token on the event loop (a signature check is
// microseconds) and asks the webhook on a goroutine of its own, so a slow
// backend holds only the joins that wait for it.
func (g *guard) Join(j *gateway.Join) {
	req := j.Request() // parsed now: the head is valid only during Join
	if req == nil {
		j.RefuseFor(gateway.RefusedAuth, http.StatusBadRequest, "bad request", nil)
		return
	}
	id, ok := g.checkToken(j, req)
	if !ok {
		return
	}
	if g.webhook == nil {
		if id != nil {
			j.SetIdentity(id)
		}
		g.Rooms.Join(j)
		return
	}
	select {
	case g.inflight <- struct{}{}:
	default:
		// Joins with ever new query strings defeat the webhook's cache and
		// its sharing of identical calls; they must not defeat the node.
		j.RefuseFor(gateway.RefusedWebhook, http.StatusServiceUnavailable, "auth backend busy", nil)
		return
	}
	go func() {
		defer func() { <-g.inflight }()
		d := g.webhook.Check(g.baseCtx, j.Kind, j.Name, req)
		if d.Err != nil {
			g.log.Warn("connect webhook failed", zap.String("kind", j.Kind), zap.String("room", j.Name), zap.Bool("allowed", d.Allow), zap.Error(d.Err))
		}
		if !d.Allow {
			j.RefuseFor(gateway.RefusedWebhook, d.Status, d.Reason, nil)
			return
		}
		if err := checkTags(d.Tags); err != nil {
			g.log.Warn("connect webhook answered tags den cannot keep", zap.String("kind", j.Kind), zap.String("room", j.Name), zap.Error(err))
			j.RefuseFor(gateway.RefusedWebhook, http.StatusServiceUnavailable, auth.ReasonBackendUnavailable, nil)
			return
		}
		if len(d.Claims) > 0 || len(d.Tags) > 0 {
			if id == nil {
				id = &rooms.Identity{}
			}
			id.Claims = mergeClaims(id.Claims, d.Claims)
			id.Tags = slices.Clone(d.Tags)
			// The webhook's word wins over the token's.
			if name, _ := d.Claims["name"].(string); name != "" {
				id.Name = name
			}
			if sub, _ := d.Claims["sub"].(string); sub != "" {
				id.Subject = sub
			}
		}
		if id != nil {
			j.SetIdentity(id)
		}
		g.Rooms.Join(j)
	}()
}

// checkToken verifies the join's token, if tokens are configured. It
// refuses the join itself and reports false when the client may not in:
// 401 for a missing (when required) or invalid token, 403 for a token not
// good for this room.
func (g *guard) checkToken(j *gateway.Join, req *http.Request) (*rooms.Identity, bool) {
	if g.verifier == nil {
		return nil, true
	}
	token, _ := auth.TokenFrom(req)
	ident, err := g.verifier.Verify(token)
	switch {
	case errors.Is(err, auth.ErrNoToken) && !g.required:
		return nil, true
	case errors.Is(err, auth.ErrNoToken):
		j.RefuseFor(gateway.RefusedAuth, http.StatusUnauthorized, "a token is required", bearerChallenge)
		return nil, false
	case err != nil:
		reason := "invalid token"
		var te *auth.TokenError
		if errors.As(err, &te) {
			reason = "invalid token: " + te.Reason
		}
		if ce := g.log.Check(zap.DebugLevel, "join refused"); ce != nil {
			ce.Write(zap.String("kind", j.Kind), zap.String("room", j.Name), zap.String("reason", reason))
		}
		j.RefuseFor(gateway.RefusedAuth, http.StatusUnauthorized, reason, invalidTokenChallenge)
		return nil, false
	case !ident.MayJoin(j.Kind, j.Name):
		j.RefuseFor(gateway.RefusedAuth, http.StatusForbidden, "the token does not allow this room", nil)
		return nil, false
	}
	return &rooms.Identity{Subject: ident.Subject, Name: ident.Name, Claims: ident.Claims}, true
}

// maxWebhookCalls bounds the joins waiting on the connect webhook at once;
// more are refused with 503.
const maxWebhookCalls = 1024

// maxWebhookTags is how many tags the webhook may give a socket: half of
// what a socket holds, so the room's own still fit.
const maxWebhookTags = rooms.MaxTags / 2

// checkTags checks the webhook's tags against what a socket may hold.
func checkTags(tags []string) error {
	if len(tags) > maxWebhookTags {
		return fmt.Errorf("%d tags, at most %d", len(tags), maxWebhookTags)
	}
	for _, t := range tags {
		if len(t) > rooms.MaxTagBytes {
			return fmt.Errorf("a tag of %d bytes, at most %d", len(t), rooms.MaxTagBytes)
		}
	}
	return nil
}

// The challenges of a 401 (RFC 6750): a token is wanted, or the one sent
// was not good.
var (
	bearerChallenge       = http.Header{"WWW-Authenticate": {`Bearer realm="den"`}}
	invalidTokenChallenge = http.Header{"WWW-Authenticate": {`Bearer realm="den", error="invalid_token"`}}
)

// mergeClaims is a's claims with b's on top.
func mergeClaims(a, b map[string]any) map[string]any {
	if len(a) == 0 {
		return maps.Clone(b)
	}
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// pickSubprotocol chooses the first subprotocol a client offers that does
// not carry a token: a browser that offers ["den", "bearer.<token>"] must
// get one of its offers back, and it must not be the token.
func pickSubprotocol(_ string, offered []string) string {
	for _, p := range offered {
		if !auth.IsTokenProtocol(p) {
			return p
		}
	}
	return ""
}
