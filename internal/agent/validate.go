package agent

import (
	"errors"
	"regexp"

	"github.com/podnet/podnet/api"
)

var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// validateKey checks an endpoint key. The container ID and the interface name come from
// the runtime's CNI_CONTAINERID and CNI_IFNAME (code 4), the network from its config
// (code 7). Errors are *api.Error wrapping the *api.ValidationError.
func validateKey(k api.EndpointKey) error {
	if k.Network == "" {
		return api.AsError(api.Missing("", "network"))
	}
	if !containerIDRE.MatchString(k.ContainerID) {
		return api.AsError(api.InvalidEnv("containerID", k.ContainerID, "must be letters, digits, '_', '.', '-', starting with a letter or digit"))
	}
	if err := api.CheckIfName(k.IfName); err != nil {
		return api.AsError(api.InvalidEnv("ifName", k.IfName, "%v", err))
	}
	return nil
}

// invalidConfig turns a validation error into the API error that carries it, with the
// code api.ErrorCode gives it (nil stays nil). An error that is neither an *api.Error
// nor an *api.ValidationError is taken for the reason of an invalid config (code 7).
func invalidConfig(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	var ve *api.ValidationError
	if !errors.As(err, &ae) && !errors.As(err, &ve) {
		err = &api.ValidationError{Reason: err.Error()}
	}
	return api.AsError(err)
}
