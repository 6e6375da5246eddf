"""Every error stacklet reports to a client, in one place.

Services raise these; each API renders them in its own service's format (Neutron's
``{"NeutronError": {"type", "message", "detail"}}``, Keystone's ``{"error": {"code", "title",
"message"}}``, Nova's ``{"itemNotFound": {"code", "message"}}``). The class name is the ``type``
Neutron reports, so names follow Neutron's exceptions where a client could see them.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class StackletError(Exception):
    status: int = 500
    message: str = "An unknown exception occurred."

    def __init__(self, message: str | None = None, detail: str = "", **kwargs: Any) -> None:
        self.kwargs = kwargs
        template = message if message is not None else self.message
        try:
            self.msg = template.format(**kwargs) if kwargs else template
        except (KeyError, IndexError):
            self.msg = template
        self.detail = detail
        super().__init__(self.msg)

    @property
    def type(self) -> str:
        return type(self).__name__

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


# --- generic HTTP-level errors --------------------------------------------------------------

class BadRequest(StackletError):
    status = 400
    message = "Bad request."


class HTTPBadRequest(BadRequest):
    """Request-level validation failure (the type Neutron's API layer reports)."""


class InvalidInput(BadRequest):
    message = "Invalid input for operation: {error_message}."


class ValidationError(BadRequest):
    """Keystone's name for a malformed request."""
    message = "Expecting to find {attribute} in {target}. The server could not comply with the " \
              "request since it is either malformed or otherwise incorrect. The client is " \
              "assumed to be in error."


class Unauthorized(StackletError):
    status = 401
    message = "The request you have made requires authentication."


class AccountLocked(Unauthorized):
    """Keystone's answer while ``[security_compliance] lockout_failure_attempts`` locks a user."""
    message = "The account is locked for user: {user_id}."


class Forbidden(StackletError):
    status = 403
    message = "You are not authorized to perform the requested action."


class PolicyNotAuthorized(Forbidden):
    """oslo.policy's refusal, worded as Neutron's: ``rule:update_router is disallowed by
    policy``, and for an attribute the action's rule and the attribute's
    (``(rule:create_port and rule:create_port:device_owner) is disallowed by policy``)."""

    message = "{rule} is disallowed by policy"

    def __init__(self, message: str | None = None, detail: str = "", **kwargs: Any) -> None:
        action = kwargs.get("action", "")
        base, sep, _ = action.partition(":")
        kwargs.setdefault("rule", f"(rule:{base} and rule:{action})" if sep
                          else f"rule:{action}")
        super().__init__(message, detail, **kwargs)


class InvalidScope(Forbidden):
    """oslo.policy's refusal of a token whose scope the rule does not accept (every Neutron
    rule is ``scope_types=['project']``)."""

    message = "{action} requires a scope of ['project'], request was made with {scope} scope."


class NotFound(StackletError):
    status = 404
    message = "The resource could not be found."


class HTTPNotFound(NotFound):
    pass


class MethodNotAllowed(StackletError):
    status = 405
    message = "The method is not allowed for the requested URL."


class Conflict(StackletError):
    status = 409
    message = "Conflict."


class InUse(Conflict):
    message = "The resource is in use."


class PreconditionFailed(StackletError):
    status = 412
    message = "Precondition failed."


class HTTPRequestEntityTooLarge(StackletError):
    """A request body over ``[oslo_middleware] max_request_body_size`` (oslo.middleware's
    sizelimit wording)."""
    status = 413
    message = "Request is too large. Larger than max_request_body_size ({limit})."


class ServiceUnavailable(StackletError):
    status = 503
    message = "The service is unavailable."


# --- Networking -----------------------------------------------------------------------------

class NetworkNotFound(NotFound):
    message = "Network {net_id} could not be found."


class SubnetNotFound(NotFound):
    message = "Subnet {subnet_id} could not be found."


class PortNotFound(NotFound):
    message = "Port {port_id} could not be found."


class AgentNotFound(NotFound):
    message = "Agent {id} could not be found."


class ExtensionNotFound(NotFound):
    message = "Extension with alias {alias} does not exist."


class TagNotFound(NotFound):
    message = "Tag {tag} could not be found."   # Neutron's tagging extension


class NetworkInUse(InUse):
    message = "Unable to complete operation on network {net_id}. There are one or more ports " \
              "still in use on the network."


class SubnetInUse(InUse):
    message = "Unable to complete operation on subnet {subnet_id}: One or more ports have an IP " \
              "allocation from this subnet."


class IpAddressInUse(InUse):
    message = "Unable to complete operation for network {net_id}. The IP address {ip_address} " \
              "is in use."


class IpAddressAlreadyAllocated(Conflict):
    message = "IP address {ip} already allocated in subnet {subnet_id}"


class IpAddressGenerationFailure(Conflict):
    message = "No more IP addresses available on network {net_id}."


class MacAddressInUse(InUse):
    message = "Unable to complete operation for network {net_id}. The mac address {mac} is in " \
              "use."


class MacAddressGenerationFailure(ServiceUnavailable):
    message = "Unable to generate unique mac on network {net_id}."


class NoNetworkAvailable(Conflict):
    """Neutron answers 503 here; stacklet answers 409, as a range exhausted by other projects'
    networks is a conflict with existing state, not an outage."""
    message = "Unable to create the network. No tenant network is available for allocation."


class VlanIdInUse(InUse):
    message = "Unable to create the network. The VLAN {vlan_id} on physical network " \
              "{physical_network} is in use."


class FlatNetworkInUse(InUse):
    message = "Unable to create the flat network. Physical network {physical_network} is in " \
              "use."


class TunnelIdInUse(InUse):
    message = "Unable to create the network. The tunnel ID {tunnel_id} is in use."


class OverQuota(Conflict):
    message = "Quota exceeded for resources: {overs}."


class InvalidQuotaValue(Conflict):
    message = "Change would make usage less than 0 for the following resources: {unders}."


class RevisionNumberConstraintFailed(PreconditionFailed):
    message = "Constrained to {expected}, but current revision is {current}"


class InvalidAllocationPool(BadRequest):
    message = "The allocation pool {pool} is not valid."


class OverlappingAllocationPools(Conflict):
    message = "Found overlapping allocation pools: {pool_1} {pool_2} for subnet {subnet_cidr}."


class OutOfBoundsAllocationPool(BadRequest):
    message = "The allocation pool {pool} spans beyond the subnet cidr {subnet_cidr}."


class GatewayConflictWithAllocationPools(InUse):
    message = "Gateway ip {ip_address} conflicts with allocation pool {pool}"


class InvalidIpForSubnet(BadRequest):
    message = "IP address {ip_address} is not a valid IP for the specified subnet."


class InvalidIpForNetwork(BadRequest):
    message = "IP address {ip_address} is not a valid IP for any of the subnets on the " \
              "specified network."


class InvalidSharedSetting(Conflict):
    message = "Unable to reconfigure sharing settings for network {network}. Multiple tenants " \
              "are using it."


class AddressPairAndPortSecurityRequired(Conflict):
    message = "Port Security must be enabled in order to have allowed address pairs on a port."


class PortBindingError(StackletError):
    status = 500
    message = "Binding failed for port {port_id}."


# --- routers and floating IPs (neutron_lib.exceptions.l3 and .extraroute) -------------------

class RouterNotFound(NotFound):
    message = "Router {router_id} could not be found"


class RouterInUse(InUse):
    message = "Router {router_id} {reason}"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("reason", "still has ports")
        super().__init__(**kwargs)


class RouterInterfaceNotFound(NotFound):
    message = "Router {router_id} does not have an interface with id {port_id}"


class RouterInterfaceNotFoundForSubnet(NotFound):
    message = "Router {router_id} has no interface on subnet {subnet_id}"


class RouterInterfaceInUseByFloatingIP(InUse):
    message = "Router interface for subnet {subnet_id} on router {router_id} cannot be " \
              "deleted, as it is required by one or more floating IPs."


class RouterInterfaceInUseByRoute(InUse):
    message = "Router interface for subnet {subnet_id} on router {router_id} cannot be " \
              "deleted, as it is required by one or more routes."


class RouterExternalGatewayInUseByFloatingIp(InUse):
    message = "Gateway cannot be updated for router {router_id}, since a gateway to external " \
              "network {net_id} is required by one or more floating IPs."


class InvalidRoutes(BadRequest):
    message = "Invalid format for routes: {routes}, {reason}"


class RoutesExhausted(BadRequest):
    message = "Unable to complete operation for {router_id}. The number of routes exceeds " \
              "the maximum {quota}."


class FloatingIPNotFound(NotFound):
    message = "Floating IP {floatingip_id} could not be found"


class ExternalGatewayForFloatingIPNotFound(NotFound):
    message = "External network {external_network_id} is not reachable from subnet " \
              "{subnet_id}.  Therefore, cannot associate Port {port_id} with a Floating IP."


class FloatingIPPortAlreadyAssociated(InUse):
    message = "Cannot associate floating IP {floating_ip_address} ({fip_id}) with port " \
              "{port_id} using fixed IP {fixed_ip}, as that fixed IP already has a floating " \
              "IP on external network {net_id}."


class ExternalIpAddressExhausted(BadRequest):
    message = "Unable to find any IP address on external network {net_id}."


class PortInUse(InUse):
    message = "Unable to complete operation on port {port_id} for network {net_id}. Port " \
              "already has an attached device {device_id}."


class ServicePortInUse(InUse):
    message = "Port {port_id} cannot be deleted directly via the port API: {reason}."


# --- RBAC policies (neutron_lib.exceptions.rbac) ----------------------------------------------

class DeviceIDNotOwnedByTenant(Conflict):
    message = "The following device_id {device_id} is not owned by your project or matches " \
              "another project router."


class HTTPForbidden(Forbidden):
    """The API layer's 403 (e.g. a port on a network neither owned nor shared)."""


class RbacPolicyNotFound(NotFound):
    message = "RBAC policy of type {object_type} with ID {id} not found"


class RbacPolicyInUse(InUse):
    message = "RBAC policy on object {object_id} cannot be removed because other objects " \
              "depend on it.\nDetails: {details}"


class DuplicateRbacPolicy(Conflict):
    message = "An RBAC policy already exists with those values."


class InvalidActionForType(InvalidInput):
    message = "Invalid action '{action}' for object type '{object_type}'. Valid actions: " \
              "{valid_actions}"


# --- subnet pools and address scopes (neutron_lib.exceptions and .address_scope) ------------

class SubnetPoolNotFound(NotFound):
    message = "Subnet pool {subnetpool_id} could not be found."


class AddressScopeNotFound(NotFound):
    message = "Address scope {address_scope_id} could not be found."


class AddressScopeInUse(InUse):
    message = "Unable to complete operation on address scope {address_scope_id}. There are " \
              "one or more subnet pools in use on the address scope."


class AddressScopeUpdateError(BadRequest):
    message = "Unable to update address scope {address_scope_id} : {reason}."


class AddressScopePrefixConflict(Conflict):
    message = "Failed to associate address scope: subnetpools within an address scope must " \
              "have unique prefixes."


class IllegalSubnetPoolAssociationToAddressScope(BadRequest):
    message = "Illegal subnetpool association: subnetpool {subnetpool_id} cannot be " \
              "associated with address scope {address_scope_id}."


class IllegalSubnetPoolIpVersionAssociationToAddressScope(BadRequest):
    message = "Illegal subnetpool association: subnetpool {subnetpool_id} cannot associate " \
              "with address scope {address_scope_id} because subnetpool ip_version is not " \
              "{ip_version}."


class EmptySubnetPoolPrefixList(BadRequest):
    message = "Empty subnet pool prefix list."


class PrefixVersionMismatch(BadRequest):
    message = "Cannot mix IPv4 and IPv6 prefixes in a subnet pool."


class IllegalSubnetPoolPrefixBounds(BadRequest):
    message = "Illegal prefix bounds: {prefix_type}={prefixlen}, " \
              "{base_prefix_type}={base_prefixlen}."


class IllegalSubnetPoolPrefixUpdate(BadRequest):
    message = "Illegal update to prefixes: {msg}."


class SubnetAllocationError(Conflict):
    """Neutron raises this as a bare NeutronException; stacklet answers 409, as running out of
    prefix space is a conflict with the pool's state."""
    message = "Failed to allocate subnet: {reason}."


class MinPrefixSubnetAllocationError(BadRequest):
    message = "Unable to allocate subnet with prefix length {prefixlen}, minimum allowed " \
              "prefix is {min_prefixlen}."


class MaxPrefixSubnetAllocationError(BadRequest):
    message = "Unable to allocate subnet with prefix length {prefixlen}, maximum allowed " \
              "prefix is {max_prefixlen}."


class SubnetPoolDeleteError(BadRequest):
    message = "Unable to delete subnet pool: {reason}."


class SubnetPoolQuotaExceeded(OverQuota):
    message = "Per-tenant subnet pool prefix quota exceeded."


# --- security groups (neutron-lib's securitygroup and port security exceptions) --------------

class SecurityGroupNotFound(NotFound):
    message = "Security group {id} does not exist"


class SecurityGroupRuleNotFound(NotFound):
    message = "Security group rule {id} does not exist"


class SecurityGroupInUse(InUse):
    message = "Security Group {id} in use."


class SecurityGroupCannotRemoveDefault(InUse):
    message = "Insufficient rights for removing default security group."


class SecurityGroupCannotUpdateDefault(InUse):
    message = "Updating default security group not allowed."


class SecurityGroupDefaultAlreadyExists(InUse):
    message = "Default security group already exists."


class SecurityGroupRuleExists(InUse):
    message = "Security group rule already exists. Rule id is {rule_id}."


class DuplicateSecurityGroupRuleInPost(InUse):
    message = "Duplicate Security Group Rule in POST."


class SecurityGroupRuleInvalidProtocol(InvalidInput):
    message = "Security group rule protocol {protocol} not supported. Only protocol values " \
              "{values} and integer representations [0 to 255] are supported."


class SecurityGroupRuleInvalidEtherType(InvalidInput):
    message = "Security group rule for ethertype '{ethertype}' not supported. Allowed values " \
              "are {values}."


class SecurityGroupRemoteGroupAndRemoteIpPrefix(InvalidInput):
    message = "Only remote_ip_prefix or remote_group_id may be provided."


class SecurityGroupProtocolRequiredWithPorts(InvalidInput):
    message = "Must also specify protocol if port range is given."


class SecurityGroupInvalidPortRange(InvalidInput):
    message = "For TCP/UDP protocols, port_range_min must be <= port_range_max"


class SecurityGroupInvalidPortValue(InvalidInput):
    message = "Invalid value for port {port}"


class SecurityGroupInvalidIcmpValue(InvalidInput):
    message = "Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255."


class SecurityGroupMissingIcmpType(InvalidInput):
    message = "ICMP code (port-range-max) {value} is provided but ICMP type " \
              "(port-range-min) is missing."


class SecurityGroupInvalidProtocolForPort(InvalidInput):
    message = "Invalid protocol {protocol} for port range, only supported for TCP, UDP, " \
              "UDPLITE, SCTP and DCCP protocols. Valid port protocols are " \
              "{valid_port_protocols}."


class SecurityGroupEthertypeConflictWithProtocol(InvalidInput):
    message = "Invalid ethertype {ethertype} for protocol {protocol}."


class SecurityGroupRuleParameterConflict(InvalidInput):
    message = "Conflicting value ethertype {ethertype} for CIDR {cidr}"


class PortSecurityAndIPRequiredForSecurityGroups(InvalidInput):
    message = "Port security must be enabled and port must have an IP address in order to " \
              "use security groups."


class PortSecurityPortHasSecurityGroup(InUse):
    message = "Port has security group associated. Cannot disable port security or IP address " \
              "until security group is removed"


class ExternalNetworkInUse(InUse):
    message = "External network {net_id} cannot be updated to be made non-external, since it " \
              "has existing gateway ports."


class SubnetPoolInUse(InUse):
    message = "Unable to complete operation on subnet pool {subnet_pool_id}. Two or more " \
              "concurrent subnets allocated."


class NetworkSubnetPoolAffinityError(BadRequest):
    message = "Subnets hosted on the same network must be allocated from the same subnet pool."


# --- Image (Glance v2) ----------------------------------------------------------------------

class GlanceError(StackletError):
    """Glance answers with webob's HTTP exceptions: the status's standard ``explanation``
    (replaced when Glance passes ``explanation=``) and an optional ``detail`` (what Glance
    passes positionally), rendered by ``api/image.py`` in webob's three forms (JSON, HTML,
    text). ``msg`` is what clients show: the explanation, then the detail."""

    EXPLANATIONS = {
        400: "The server could not comply with the request since\r\nit is either malformed "
             "or otherwise incorrect.\r\n",
        403: "Access was denied to this resource.",
        404: "The resource could not be found.",
        405: "",
        409: "There was a conflict when trying to complete your request.",
        410: "This resource is no longer available.  No forwarding address is given.",
        413: "The body of your request was too large for this server.",
        415: "",
        500: "The server has either erred or is incapable of performing the requested "
             "operation.",
        503: "The server is currently unavailable. Please try again at a later time.",
    }

    def __init__(self, status: int, explanation: str | None = None, detail: str = "",
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.explanation = (explanation if explanation is not None
                            else self.EXPLANATIONS.get(status, ""))
        self.headers = headers or {}
        super().__init__(" ".join(p for p in (self.explanation, detail) if p), detail=detail)


# --- Compute (nova.exception and the API's own wording) ----------------------------------------

class NotAcceptable(StackletError):
    """A microversion outside what the Compute API serves (Nova's InvalidGlobalAPIVersion)."""
    status = 406
    message = "Version {req_ver} is not supported by the API. Minimum is {min_ver} and " \
              "maximum is {max_ver}."


class ComputePolicyNotAuthorized(Forbidden):
    """nova.exception.PolicyNotAuthorized (a rule refused, whatever the token's scope)."""
    message = "Policy doesn't allow {action} to be performed."


class FlavorNotFound(NotFound):
    message = "Flavor {flavor_id} could not be found."


class FlavorAccessNotFound(NotFound):
    message = "Flavor access not found for {flavor_id} / {project_id} combination."


class FlavorExtraSpecsNotFound(NotFound):
    message = "Flavor {flavor_id} has no extra specs with key {extra_specs_key}."


class FlavorExists(Conflict):
    message = "Flavor with name {name} already exists."


class FlavorIdExists(Conflict):
    message = "Flavor with ID {flavor_id} already exists."


class FlavorAccessExists(Conflict):
    message = "Flavor access already exists for flavor {flavor_id} and project {project_id} " \
              "combination."


class KeypairNotFound(NotFound):
    message = "Keypair {name} not found for user {user_id}"


class KeyPairExists(Conflict):
    message = "Key pair '{key_name}' already exists."


class InvalidKeypair(BadRequest):
    message = "Keypair data is invalid: {reason}"


class KeypairLimitExceeded(Forbidden):
    """Nova answers a key pair over quota with 403 (not 413) and this message."""
    message = "Quota exceeded, too many key pairs."
