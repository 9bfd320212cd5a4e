package agent

import (
	"errors"
	"regexp"

	"github.com/podnet/podnet/api"
)

var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

func validateKey(k api.EndpointKey) error {
	if k.Network == "" {
		return api.Errorf(api.CodeInvalidConfig, "network: empty network name")
	}
	if !containerIDRE.MatchString(k.ContainerID) {
		return api.Errorf(api.CodeInvalidEnv, "containerID %q: must be letters, digits, '_', '.', '-', starting with a letter or digit", k.ContainerID)
	}
	if !api.ValidIfName(k.IfName) {
		return api.Errorf(api.CodeInvalidEnv, "ifName %q: must be 1-15 bytes without '/', ':' or spaces", k.IfName)
	}
	return nil
}

// invalidConfig turns a validation error into an API error with code 7 (nil stays nil).
func invalidConfig(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	return &api.Error{Code: api.CodeInvalidConfig, Msg: err.Error()}
}
