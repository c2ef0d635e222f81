package b2bua

import "github.com/esbc/esbc/media"

// MediaAdapter adapts a *media.Engine to MediaEngine.
func MediaAdapter(e *media.Engine) MediaEngine { return engine{e} }

type engine struct{ e *media.Engine }

func (a engine) NewSession(id string, x, y media.LegConfig, onInactive func()) (MediaSession, error) {
	s, err := a.e.NewSession(id, x, y, onInactive)
	if err != nil {
		return nil, err
	}
	return s, nil
}
