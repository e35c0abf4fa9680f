// Package frames implements the AMQP 1.0 frame layer (OASIS AMQP 1.0 core,
// part 2.3 and 5.3): protocol headers, frame headers, the transport
// performatives and the SASL frames, each type carrying the specification's
// XML definition.
//
// ReadFrame cuts one frame out of a byte slice without copying or
// allocating and enforces the caller's max-frame-size before trusting any
// length. A Decoder decodes performatives into storage it reuses, so the hot
// path (transfer, flow, disposition) does not allocate. Frames are written
// append-style: AppendFrame writes a frame header with a placeholder size,
// the performative and the payload, then patches the size.
package frames
