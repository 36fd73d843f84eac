package coap

// Code is a CoAP code byte: class<<5 | detail, written "class.detail".
type Code uint8

// Response codes used by tagauth (RFC 7252 section 12.1.2).
const (
	Changed               Code = 0x44 // 2.04
	BadRequest            Code = 0x80 // 4.00
	Unauthorized          Code = 0x81 // 4.01
	NotFound              Code = 0x84 // 4.04
	MethodNotAllowed      Code = 0x85 // 4.05
	RequestEntityTooLarge Code = 0x8d // 4.13
	InternalServerError   Code = 0xa0 // 5.00
	ServiceUnavailable    Code = 0xa3 // 5.03
)

// Codes the server itself answers with for requests RFC 7252 obliges it to
// refuse; handlers have no use for them.
const (
	empty                    Code = 0x00 // 0.00
	methodPOST               Code = 0x02 // 0.02
	badOption                Code = 0x82 // 4.02
	notAcceptable            Code = 0x86 // 4.06
	unsupportedContentFormat Code = 0x8f // 4.15
)

// Class is the code's class: 0 request, 2 success, 4 client error, 5 server
// error.
func (c Code) Class() uint8 { return uint8(c) >> 5 }

// Detail is the code's detail, the part after the dot.
func (c Code) Detail() uint8 { return uint8(c) & 0x1f }

// String returns the code in RFC 7252's dotted form, such as "2.04".
func (c Code) String() string {
	d := c.Detail()
	return string([]byte{'0' + c.Class(), '.', '0' + d/10, '0' + d%10})
}

// isResponse reports whether c is a response code (classes 2, 4 and 5).
func (c Code) isResponse() bool {
	switch c.Class() {
	case 2, 4, 5:
		return true
	}
	return false
}
