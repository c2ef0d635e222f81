package sdp

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Suite describes one SDES crypto suite.
type Suite struct {
	Name    string
	KeyLen  int // master key bytes
	SaltLen int // master salt bytes
}

// Suites lists the suites esbc implements, in the order it offers them.
var Suites = []Suite{
	{"AES_CM_128_HMAC_SHA1_80", 16, 14},
	{"AES_CM_128_HMAC_SHA1_32", 16, 14},
	{"AEAD_AES_128_GCM", 16, 12},
	{"AEAD_AES_256_GCM", 32, 12},
	{"AES_256_CM_HMAC_SHA1_80", 32, 14},
	{"AES_256_CM_HMAC_SHA1_32", 32, 14},
}

// LookupSuite returns the suite named name (case-sensitive per RFC 4568).
func LookupSuite(name string) (Suite, bool) {
	for _, s := range Suites {
		if s.Name == name {
			return s, true
		}
	}
	return Suite{}, false
}

// Crypto is one a=crypto attribute (RFC 4568 9.1). Only the first
// key-param is used; further ones (MKI key rotation) are kept in Extra.
type Crypto struct {
	Tag      int
	Suite    string
	Key      []byte // master key || master salt
	Lifetime string // as written ("2^31", "1048576"), "" when absent
	MKI      uint64 // MKI value when MKILen > 0
	MKILen   int    // MKI length in bytes, 0 = no MKI
	Extra    string // further key-params and session params, verbatim (space separated)
}

// ParseCrypto parses the value of an a=crypto attribute (the text after
// "a=crypto:"). It refuses unknown suites, a non-zero KDR and session
// parameters that change the packet format.
func ParseCrypto(value string) (Crypto, error) {
	var c Crypto
	f := strings.Fields(value)
	if len(f) < 3 {
		return c, fmt.Errorf("%w: crypto %q: want tag suite key-params", ErrMalformed, value)
	}
	tag, err := strconv.Atoi(f[0])
	if err != nil || tag < 0 || tag > 999999999 {
		return c, fmt.Errorf("%w: crypto tag %q", ErrMalformed, f[0])
	}
	c.Tag = tag
	c.Suite = f[1]
	suite, ok := LookupSuite(f[1])
	if !ok {
		return c, fmt.Errorf("%w: %q", ErrUnknownSuite, f[1])
	}
	keyParams := strings.Split(f[2], ";")
	kp := keyParams[0]
	if !strings.HasPrefix(strings.ToLower(kp), "inline:") {
		return c, fmt.Errorf("%w: key method in %q (only inline)", ErrMalformed, kp)
	}
	parts := strings.Split(kp[len("inline:"):], "|")
	key, err := base64.StdEncoding.DecodeString(parts[0])
	if err != nil {
		// Some peers drop the padding.
		key, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(parts[0], "="))
		if err != nil {
			return c, fmt.Errorf("%w: key is not base64", ErrMalformed)
		}
	}
	if len(key) != suite.KeyLen+suite.SaltLen {
		return c, fmt.Errorf("%w: %s key||salt is %d bytes, want %d", ErrMalformed, suite.Name, len(key), suite.KeyLen+suite.SaltLen)
	}
	c.Key = key
	for _, p := range parts[1:] {
		if i := strings.IndexByte(p, ':'); i >= 0 {
			v, err1 := strconv.ParseUint(p[:i], 10, 64)
			l, err2 := strconv.Atoi(p[i+1:])
			if err1 != nil || err2 != nil || l < 1 || l > 128 || (l < 8 && v >= 1<<(8*uint(l))) {
				return c, fmt.Errorf("%w: MKI %q", ErrMalformed, p)
			}
			if l > 8 {
				return c, fmt.Errorf("%w: MKI length %d", ErrUnsupportedParam, l)
			}
			c.MKI, c.MKILen = v, l
			continue
		}
		if !validLifetime(p) {
			return c, fmt.Errorf("%w: lifetime %q", ErrMalformed, p)
		}
		c.Lifetime = p
	}
	var extra []string
	if len(keyParams) > 1 {
		extra = append(extra, strings.Join(keyParams[1:], ";"))
	}
	for _, sp := range f[3:] {
		up := strings.ToUpper(sp)
		switch {
		case strings.HasPrefix(up, "KDR="):
			n, err := strconv.Atoi(sp[4:])
			if err != nil {
				return c, fmt.Errorf("%w: %q", ErrMalformed, sp)
			}
			if n != 0 {
				return c, fmt.Errorf("%w: KDR=%d (only 0 is supported)", ErrUnsupportedKDR, n)
			}
		case up == "UNENCRYPTED_SRTP", up == "UNENCRYPTED_SRTCP", up == "UNAUTHENTICATED_SRTP",
			strings.HasPrefix(up, "FEC_ORDER="), strings.HasPrefix(up, "FEC_KEY="):
			return c, fmt.Errorf("%w: %s", ErrUnsupportedParam, sp)
		}
		extra = append(extra, sp)
	}
	c.Extra = strings.Join(extra, " ")
	return c, nil
}

func validLifetime(p string) bool {
	if strings.HasPrefix(p, "2^") {
		n, err := strconv.Atoi(p[2:])
		return err == nil && n >= 0 && n <= 64
	}
	_, err := strconv.ParseUint(p, 10, 64)
	return err == nil
}

// String formats the attribute value (without "a=crypto:").
func (c Crypto) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.Tag))
	b.WriteByte(' ')
	b.WriteString(c.Suite)
	b.WriteString(" inline:")
	b.WriteString(base64.StdEncoding.EncodeToString(c.Key))
	if c.Lifetime != "" {
		b.WriteByte('|')
		b.WriteString(c.Lifetime)
	}
	if c.MKILen > 0 {
		b.WriteByte('|')
		b.WriteString(strconv.FormatUint(c.MKI, 10))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(c.MKILen))
	}
	return b.String()
}

// MKIBytes returns the MKI as it appears in packets (big endian, MKILen bytes).
func (c Crypto) MKIBytes() []byte {
	if c.MKILen == 0 {
		return nil
	}
	b := make([]byte, c.MKILen)
	v := c.MKI
	for i := c.MKILen - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

// NewCrypto returns a crypto attribute with a fresh key||salt from crypto/rand.
func NewCrypto(tag int, suite string) (Crypto, error) {
	s, ok := LookupSuite(suite)
	if !ok {
		return Crypto{}, fmt.Errorf("%w: %q", ErrUnknownSuite, suite)
	}
	key := make([]byte, s.KeyLen+s.SaltLen)
	if _, err := rand.Read(key); err != nil {
		return Crypto{}, fmt.Errorf("new crypto: %w", err)
	}
	return Crypto{Tag: tag, Suite: suite, Key: key}, nil
}
