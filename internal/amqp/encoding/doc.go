// Package encoding implements the AMQP 1.0 type system (OASIS AMQP 1.0 core,
// part 1) and the message format (part 3): primitive and described values,
// message sections, delivery states and terminus types.
//
// Encoding is append-style: every Append function and every MarshalAMQP
// method appends to a caller-provided []byte and returns the extended slice,
// so a connection writer can encode straight into its output buffer.
//
// Decoding goes through a Reader over a complete []byte. Decoded []byte
// values (binary, delivery tags, data sections, raw sections) alias the
// input: copy them if the input buffer is reused. Decoding never panics, checks
// every length and count against the bytes actually present before allocating,
// and bounds nesting at MaxDepth. Every decoding failure wraps ErrDecode so the
// server can map it to the amqp:decode-error condition.
package encoding
