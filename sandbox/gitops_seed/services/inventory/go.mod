module gitlab.sandbox.local/platform/inventory

go 1.17

require (
	github.com/docker/distribution v2.7.1+incompatible
	github.com/open-policy-agent/opa v0.35.0
	golang.org/x/text v0.3.6
)
