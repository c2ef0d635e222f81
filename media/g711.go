package media

// G.711 µ-law↔A-law conversion tables, computed once through the 16-bit
// linear value (ITU-T G.711; the Sun reference g711.c algorithms).
var (
	ulawToAlaw [256]byte
	alawToUlaw [256]byte
)

func init() {
	for i := 0; i < 256; i++ {
		ulawToAlaw[i] = linearToAlaw(ulawToLinear(byte(i)))
		alawToUlaw[i] = linearToUlaw(alawToLinear(byte(i)))
	}
}

func ulawToLinear(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

func alawToLinear(a byte) int16 {
	a ^= 0x55
	t := int(a&0x0f) << 4
	seg := (a & 0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

var (
	ulawSegEnd = [8]int{0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF}
	alawSegEnd = [8]int{0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF}
)

func linearToUlaw(pcm int16) byte {
	const bias = 0x84
	v := int(pcm) >> 2
	mask := 0xFF
	if v < 0 {
		v = -v
		mask = 0x7F
	}
	v += bias >> 2
	if v > 0x1FDF {
		v = 0x1FDF
	}
	// Sun g711.c linear2ulaw on the 14-bit magnitude.
	s := 0
	for s = 0; s < 8; s++ {
		if v <= ulawSegEnd[s] {
			break
		}
	}
	if s >= 8 {
		return byte(0x7F ^ mask)
	}
	u := (s << 4) | ((v >> (s + 1)) & 0xF)
	return byte(u ^ mask)
}

func linearToAlaw(pcm int16) byte {
	v := int(pcm) >> 3
	mask := 0xD5
	if v < 0 {
		mask = 0x55
		v = -v - 1
	}
	s := 0
	for s = 0; s < 8; s++ {
		if v <= alawSegEnd[s] {
			break
		}
	}
	if s >= 8 {
		return byte(0x7F ^ mask)
	}
	a := s << 4
	if s < 2 {
		a |= (v >> 1) & 0xF
	} else {
		a |= (v >> s) & 0xF
	}
	return byte(a ^ mask)
}
