package wsframe

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"
)

// StatusCode is a close frame's status code (RFC 6455 section 7.4).
type StatusCode uint16

// Close codes den sends or reads. 1005 and 1006 never travel on the wire:
// they describe a close frame without a code and a connection that ended
// without a close frame.
const (
	CloseNormal          StatusCode = 1000 // done; do not reconnect for the same reason
	CloseGoingAway       StatusCode = 1001 // peer left, or den gave up on a silent peer; reconnect
	CloseProtocolError   StatusCode = 1002 // the client broke RFC 6455; fix the client
	CloseUnsupportedData StatusCode = 1003
	CloseNoStatus        StatusCode = 1005
	CloseAbnormal        StatusCode = 1006
	CloseInvalidPayload  StatusCode = 1007 // text that is not UTF-8, or corrupt compressed data
	ClosePolicyViolation StatusCode = 1008 // e.g. a slow consumer; reconnect and read faster
	CloseMessageTooBig   StatusCode = 1009 // over --max-message-bytes; do not resend as is
	CloseMandatoryExt    StatusCode = 1010
	CloseInternalError   StatusCode = 1011 // den failed; reconnect with backoff
	CloseServiceRestart  StatusCode = 1012 // den is restarting; reconnect with backoff
	CloseTryAgainLater   StatusCode = 1013 // den is overloaded; reconnect with backoff
)

// ValidCloseCode reports whether code may travel in a close frame: the
// codes RFC 6455 and IANA define for use on the wire, and 3000-4999 for
// libraries and applications.
func ValidCloseCode(code StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// ParseClose splits a close frame's payload into code and reason. An empty
// payload yields CloseNoStatus. It does not validate; the Decoder already
// has for frames it returned.
func ParseClose(payload []byte) (StatusCode, []byte) {
	if len(payload) < 2 {
		return CloseNoStatus, nil
	}
	return StatusCode(binary.BigEndian.Uint16(payload)), payload[2:]
}

func checkClosePayload(p []byte) error {
	switch {
	case len(p) == 0:
		return nil
	case len(p) == 1:
		return errCloseOneByte
	case !ValidCloseCode(StatusCode(binary.BigEndian.Uint16(p))):
		return errCloseCode
	case !utf8.Valid(p[2:]):
		return errCloseReason
	}
	return nil
}

// AppendClose appends an unmasked close frame (server to client). A
// reason longer than fits in a control frame is cut at a rune boundary.
func AppendClose(dst []byte, code StatusCode, reason string) []byte {
	var p [MaxControlPayload]byte
	payload := appendClosePayload(p[:0], code, reason)
	dst = AppendHeader(dst, true, 0, OpClose, len(payload))
	return append(dst, payload...)
}

// AppendMaskedClose is AppendClose for a client: the frame is masked with
// key.
func AppendMaskedClose(dst []byte, code StatusCode, reason string, key [4]byte) []byte {
	var p [MaxControlPayload]byte
	return AppendMaskedFrame(dst, true, 0, OpClose, appendClosePayload(p[:0], code, reason), key)
}

// appendClosePayload appends a close frame's payload: the code and the
// reason cut to fit, or nothing for CloseNoStatus.
func appendClosePayload(dst []byte, code StatusCode, reason string) []byte {
	if code == CloseNoStatus {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, trimReason(reason)...)
}

// trimReason makes a close reason fit a control frame, as UTF-8: a reason
// that is not would make the peer fail the connection (RFC 6455 §8.1)
// instead of reading the close.
func trimReason(r string) string {
	const max = MaxControlPayload - 2
	if !utf8.ValidString(r) {
		r = strings.ToValidUTF8(r, "\uFFFD")
	}
	if len(r) <= max {
		return r
	}
	r = r[:max]
	for len(r) > 0 && !utf8.ValidString(r) {
		r = r[:len(r)-1]
	}
	return r
}
