//go:build !race

package b2bua_test

const raceEnabled = false
