package sdp

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseCrypto(t *testing.T) {
	tests := []struct {
		in      string
		err     error
		suite   string
		mkiLen  int
		life    string
		roundTo string // "" = same as in
	}{
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4", suite: "AES_CM_128_HMAC_SHA1_80", mkiLen: 4, life: "2^20"},
		{in: "2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj", suite: "AES_CM_128_HMAC_SHA1_32"},
		{in: "3 AEAD_AES_128_GCM inline:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYg==", suite: "AEAD_AES_128_GCM"},
		{in: "4 AEAD_AES_256_GCM inline:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWI=", suite: "AEAD_AES_256_GCM"},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1048576 KDR=0", suite: "AES_CM_128_HMAC_SHA1_80", life: "1048576",
			roundTo: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1048576"},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4 KDR=2", err: ErrUnsupportedKDR},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP", err: ErrUnsupportedParam},
		{in: "1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", err: ErrUnknownSuite},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=", err: ErrMalformed},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:!!!", err: ErrMalformed},
		{in: "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", err: ErrMalformed},
		{in: "1 AES_CM_128_HMAC_SHA1_80", err: ErrMalformed},
		{in: "1 AES_CM_128_HMAC_SHA1_80 key:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", err: ErrMalformed},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^x", err: ErrMalformed},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|300:1", err: ErrMalformed},
	}
	for _, tc := range tests {
		c, err := ParseCrypto(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: err %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if c.Suite != tc.suite || c.MKILen != tc.mkiLen || c.Lifetime != tc.life {
			t.Errorf("%q: %+v", tc.in, c)
		}
		want := tc.roundTo
		if want == "" {
			want = tc.in
		}
		if c.String() != want {
			t.Errorf("String() = %q, want %q", c.String(), want)
		}
	}
}

func TestMKIBytes(t *testing.T) {
	c := Crypto{MKI: 0x0102, MKILen: 4}
	if !bytes.Equal(c.MKIBytes(), []byte{0, 0, 1, 2}) {
		t.Fatalf("%x", c.MKIBytes())
	}
}

func TestNewCryptoFresh(t *testing.T) {
	for _, s := range Suites {
		a, err := NewCrypto(1, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := NewCrypto(1, s.Name)
		if len(a.Key) != s.KeyLen+s.SaltLen || bytes.Equal(a.Key, b.Key) {
			t.Fatalf("%s: key %x / %x", s.Name, a.Key, b.Key)
		}
		back, err := ParseCrypto(a.String())
		if err != nil || !bytes.Equal(back.Key, a.Key) {
			t.Fatalf("%s: %v", s.Name, err)
		}
	}
	if _, err := NewCrypto(1, "NOPE"); !errors.Is(err, ErrUnknownSuite) {
		t.Fatal(err)
	}
}

func FuzzParseCrypto(f *testing.F) {
	for _, s := range []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
		"3 AEAD_AES_128_GCM inline:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYg== KDR=0 WSH=64",
		"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4;inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^20|2:4",
		"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR KDR=3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, err := ParseCrypto(v)
		if err != nil {
			return
		}
		back, err := ParseCrypto(c.String())
		if err != nil {
			t.Fatalf("%q → %q: %v", v, c.String(), err)
		}
		if back.Tag != c.Tag || back.Suite != c.Suite || !bytes.Equal(back.Key, c.Key) || back.MKI != c.MKI || back.MKILen != c.MKILen || back.Lifetime != c.Lifetime {
			t.Fatalf("round trip %+v → %+v", c, back)
		}
	})
}
