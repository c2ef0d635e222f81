package config

import (
	"bytes"
	"os"
	"reflect"
	"testing"

	"github.com/spf13/viper"
)

// TestExampleDocumentsEveryKey keeps config.example.yaml complete: every
// key of the schema appears in it (inside lists, in the first element).
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var missing []string
	var check func(path string, raw any, typ reflect.Type)
	check = func(path string, raw any, typ reflect.Type) {
		switch {
		case typ.Kind() == reflect.Struct && typ != durationType:
			m, _ := raw.(map[string]any)
			for i := 0; i < typ.NumField(); i++ {
				k := typ.Field(i).Tag.Get("mapstructure")
				sub, ok := m[k]
				if !ok {
					missing = append(missing, join(path, k))
					continue
				}
				check(join(path, k), sub, typ.Field(i).Type)
			}
		case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct:
			if l, _ := raw.([]any); len(l) > 0 {
				check(path+"[0]", l[0], typ.Elem())
			}
		}
	}
	check("", v.AllSettings(), reflect.TypeOf(Config{}))
	for _, k := range missing {
		t.Errorf("config.example.yaml does not document %s", k)
	}
}
