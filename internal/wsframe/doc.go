// Package wsframe is den's RFC 6455 frame codec: header parsing and
// encoding, the incremental Decoder that turns a byte stream into messages
// with every protocol rule checked, a streaming UTF-8 validator, close codes
// and permessage-deflate (RFC 7692) payload helpers.
//
// It knows nothing of sockets or event loops, so the gateway and the load
// generator share it. Nothing in it blocks or starts goroutines; a Decoder
// belongs to one connection and is used by one goroutine at a time.
package wsframe
