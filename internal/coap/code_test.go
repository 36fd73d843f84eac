package coap

import "testing"

func TestCodeString(t *testing.T) {
	for c, s := range map[Code]string{
		0x00: "0.00", methodPOST: "0.02", Changed: "2.04", BadRequest: "4.00", Unauthorized: "4.01",
		NotFound: "4.04", MethodNotAllowed: "4.05", RequestEntityTooLarge: "4.13",
		unsupportedContentFormat: "4.15", InternalServerError: "5.00", ServiceUnavailable: "5.03", 0xff: "7.31",
	} {
		if got := c.String(); got != s {
			t.Errorf("Code(%#x).String() = %q, want %q", uint8(c), got, s)
		}
	}
}
