"""infra/*.bicep, read with a light parser (tests/infra/bicep.py): the structure the app and
DESIGN rely on. No Bicep compiler is available here; `az bicep build` is the next check."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from redisflush.settings import DEFAULTS

from .bicep import BicepFile, BicepSyntaxError, Expr, Resource, load, parse_object

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in role definition ids (Azure built-in roles reference).
SB_RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
SB_SENDER = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
BLOB_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
REDIS_CACHE_CONTRIBUTOR = "e0f68234-74aa-48ed-b826-c38b57376e17"

FLUSH = "Microsoft.Cache/redis/flush/action"
OPERATION_READS = {"Microsoft.Cache/locations/operationresults/read",
                   "Microsoft.Cache/locations/operationsStatus/read"}

# Settings the code reads that the template must not set, and why.
NOT_IN_AZURE = {
    "ServiceBusConnection": "a connection string: the identity-based form is set instead",
    "AZURE_CLIENT_ID": "only for a user-assigned identity; the app's is system-assigned",
    "REDISFLUSH_LOCAL_DIR": "the local bus and emulator state, local mode only",
}

# Oldest API version accepted per type (Flex Consumption needs Microsoft.Web 2023-12-01+).
MIN_API = {
    "Microsoft.ServiceBus/namespaces": "2021-11-01",
    "Microsoft.ServiceBus/namespaces/queues": "2021-11-01",
    "Microsoft.ServiceBus/namespaces/topics": "2021-11-01",
    "Microsoft.ServiceBus/namespaces/topics/subscriptions": "2021-11-01",
    "Microsoft.Storage/storageAccounts": "2023-01-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2023-01-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-01-01",
    "Microsoft.OperationalInsights/workspaces": "2022-10-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Web/serverfarms": "2023-12-01",
    "Microsoft.Web/sites": "2023-12-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.Authorization/roleDefinitions": "2022-04-01",
}


@pytest.fixture(scope="module")
def main() -> BicepFile:
    return load(INFRA / "main.bicep")


@pytest.fixture(scope="module")
def roles_module() -> BicepFile:
    return load(INFRA / "modules" / "flush-roles.bicep")


@pytest.fixture(scope="module")
def scope_module() -> BicepFile:
    return load(INFRA / "modules" / "flush-scope.bicep")


def app_settings(main: BicepFile) -> dict[str, Any]:
    (site,) = main.of_type("Microsoft.Web/sites")
    entries = site.body["properties"]["siteConfig"]["appSettings"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {e["name"]: e["value"] for e in entries}


def one(main: BicepFile, type_: str, name_param: str | None = None) -> Resource:
    found = main.of_type(type_)
    if name_param is not None:
        found = [r for r in found if r.body["name"] == name_param]
    assert len(found) == 1, (type_, name_param, found)
    return found[0]


# -- the reader itself must notice broken syntax ---------------------------------------------

def test_the_reader_rejects_broken_bicep(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bicep"
    bad.write_text("resource x 'A/b@2020-01-01' = {\n  name: 'x'\n  properties: {\n}\n")
    with pytest.raises(BicepSyntaxError):
        load(bad)
    with pytest.raises(BicepSyntaxError):
        parse_object("name: 'a'\nname: 'b'\n")


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_file_reads_and_references_resolve(path: Path) -> None:
    bf = load(path)
    symbols = set(bf.resources) | set(bf.modules) | set(bf.params) | set(bf.variables)
    for res in bf.resources.values():
        parent = res.body.get("parent")
        if parent is not None:
            assert parent in bf.resources, f"{res.symbol}: unknown parent {parent}"
            assert res.type.startswith(bf.resources[parent].type + "/")
        for dep in res.body.get("dependsOn", []):
            assert dep in bf.resources
    # every `name.property` or bare identifier that is used must be declared
    builtins = {"resourceGroup", "subscription", "environment", "guid", "uniqueString",
                "toLower", "take", "join", "map", "split", "string", "concat", "empty",
                "subscriptionResourceId", "true", "false", "if", "for", "in", "rg", "null",
                "string", "int", "bool", "array", "object"}
    code = re.sub(r"'(?:[^'\\]|\\.)*'", "''", bf.text)   # drop string bodies
    used = set(re.findall(r"(?<![\w.@'])([a-z]\w*)(?=\s*[.\[)\],\n?:!]|\s*$)", code, re.M))
    decl = set(re.findall(r"^(?:param|var|resource|module|output)\s+(\w+)", bf.text, re.M))
    keys = set(re.findall(r"^\s*(\w+)\s*:", bf.text, re.M))
    unknown = used - symbols - builtins - decl - keys - {"targetScope"}
    assert not unknown, f"{path.name}: undeclared names {sorted(unknown)}"
    # no unused params
    body = re.sub(r"^param .*$", "", code, flags=re.M)
    for name in bf.params:
        assert re.search(rf"\b{name}\b", body), f"{path.name}: param {name} is never used"


# -- resources and API versions ----------------------------------------------------------------

def test_resource_types_and_api_versions(main: BicepFile, roles_module: BicepFile,
                                         scope_module: BicepFile) -> None:
    resources = [*main.resources.values(), *roles_module.resources.values(),
                 *scope_module.resources.values()]
    types = {r.type for r in resources}
    assert types == set(MIN_API), types ^ set(MIN_API)
    for res in resources:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", res.api_version), res
        assert res.api_version >= MIN_API[res.type], (res.symbol, res.api_version)
    assert len(main.of_type("Microsoft.ServiceBus/namespaces/queues")) == 3


def test_service_bus_is_standard(main: BicepFile) -> None:
    ns = one(main, "Microsoft.ServiceBus/namespaces")
    assert ns.body["sku"] == {"name": "Standard", "tier": "Standard"}
    assert ns.body["properties"]["disableLocalAuth"] == "disableLocalAuth"
    assert main.params["disableLocalAuth"].default is True


@pytest.mark.parametrize("param", ["requestQueueName", "pollQueueName"])
def test_request_and_poll_queues_deduplicate(main: BicepFile, param: str) -> None:
    props = one(main, "Microsoft.ServiceBus/namespaces/queues", param).body["properties"]
    assert props["requiresDuplicateDetection"] is True
    assert props["duplicateDetectionHistoryTimeWindow"] == "PT10M"
    assert props["maxDeliveryCount"] == 10
    assert props["lockDuration"] == "PT1M"
    assert props.get("requiresSession", False) is False   # the triggers are session-less


def test_reply_queue_requires_sessions(main: BicepFile) -> None:
    props = one(main, "Microsoft.ServiceBus/namespaces/queues", "replyQueueName") \
        .body["properties"]
    assert props["requiresSession"] is True
    assert props["lockDuration"] == "PT1M"      # remote.SESSION_RENEW_EVERY renews within it
    assert props["requiresDuplicateDetection"] is True


def test_events_topic_deduplicates_and_has_the_all_subscription(main: BicepFile) -> None:
    topic = one(main, "Microsoft.ServiceBus/namespaces/topics")
    assert topic.body["properties"]["requiresDuplicateDetection"] is True
    assert topic.body["properties"]["duplicateDetectionHistoryTimeWindow"] == "PT10M"
    sub = one(main, "Microsoft.ServiceBus/namespaces/topics/subscriptions")
    assert sub.body["parent"] == topic.symbol
    assert sub.body["name"] == "eventsSubscriptionName"
    assert main.params["eventsSubscriptionName"].default == "all"
    assert sub.body["properties"]["maxDeliveryCount"] == 10


def test_entity_name_defaults_match_the_code(main: BicepFile) -> None:
    for param, setting in (("requestQueueName", "REDISFLUSH_REQUEST_QUEUE"),
                           ("pollQueueName", "REDISFLUSH_POLL_QUEUE"),
                           ("eventsTopicName", "REDISFLUSH_EVENTS_TOPIC"),
                           ("replyQueueName", "REDISFLUSH_REPLY_QUEUE")):
        assert main.params[param].default == DEFAULTS[setting]


def test_flex_consumption_python_app_with_system_identity(main: BicepFile) -> None:
    plan = one(main, "Microsoft.Web/serverfarms")
    assert plan.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan.body["properties"]["reserved"] is True
    site = one(main, "Microsoft.Web/sites")
    assert site.body["kind"] == "functionapp,linux"
    assert site.body["identity"] == {"type": "SystemAssigned"}
    props = site.body["properties"]
    assert props["serverFarmId"] == "plan.id" and props["httpsOnly"] is True
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert main.params["pythonVersion"].default == "3.11"
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    # Flex rejects these as app settings: the runtime lives in functionAppConfig
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                "WEBSITE_RUN_FROM_PACKAGE"} & set(app_settings(main))


def test_monitoring_is_workspace_based_and_entra_only(main: BicepFile) -> None:
    ai = one(main, "Microsoft.Insights/components")
    assert ai.body["properties"]["WorkspaceResourceId"] == "workspace.id"
    assert ai.body["properties"]["DisableLocalAuth"] is True
    settings = app_settings(main)
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == \
        "appInsights.properties.ConnectionString"


# -- parameters ----------------------------------------------------------------------------------

def test_parameters(main: BicepFile) -> None:
    flush = main.params["flushScopes"]
    assert flush.type == "array" and not flush.has_default
    assert "@minLength(1)" in flush.decorators
    assert main.params["useBuiltInRole"].type == "bool"
    assert main.params["useBuiltInRole"].default is False
    assert main.params["grantOperationStatusRead"].default is True
    assert main.params["location"].default == "resourceGroup().location"
    for name, param in main.params.items():
        assert any(d.startswith("@description") for d in param.decorators) \
            or name in ("pollQueueName", "eventsTopicName", "replyQueueName", "tags"), name


def test_example_parameters_file_fits_the_template(main: BicepFile) -> None:
    doc = json.loads((INFRA / "main.parameters.example.json").read_text())
    assert doc["$schema"].endswith("deploymentParameters.json#")
    given = doc["parameters"]
    assert set(given) <= set(main.params)
    required = {n for n, p in main.params.items() if not p.has_default}
    assert required <= set(given)
    assert isinstance(given["flushScopes"]["value"], list) and given["flushScopes"]["value"]
    for name, entry in given.items():
        kind = main.params[name].type
        expected = {"string": str, "bool": bool, "int": int, "array": list,
                    "object": dict}[kind]
        assert isinstance(entry["value"], expected), name


def test_readme_documents_the_one_command() -> None:
    command = "az deployment group create -g RG -f infra/main.bicep -p @infra/main.parameters.json"
    assert command in (INFRA / "README.md").read_text()
    assert command in (ROOT / "docs" / "azure.md").read_text()
    assert command in (INFRA / "main.bicep").read_text()


# -- identity-based settings only ---------------------------------------------------------------

@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_keys_anywhere(path: Path) -> None:
    text = path.read_text()
    for secret in ("AccountKey", "listKeys", "SharedAccessKey", "listConnectionStrings",
                   "primaryKey", "InstrumentationKey", "DefaultEndpointsProtocol",
                   "AzureWebJobsStorage'"):
        assert secret.lower() not in text.lower(), f"{path.name}: {secret}"


def test_storage_refuses_shared_keys(main: BicepFile) -> None:
    props = one(main, "Microsoft.Storage/storageAccounts").body["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False


def test_connections_are_identity_based(main: BicepFile) -> None:
    settings = app_settings(main)
    assert settings["AzureWebJobsStorage__accountName"] == "storage.name"
    assert "AzureWebJobsStorage" not in settings
    assert "ServiceBusConnection" not in settings
    fqdn = settings["ServiceBusConnection__fullyQualifiedNamespace"]
    assert "serviceBusEndpoint" in main.variables[fqdn]
    for name, value in settings.items():
        assert not re.search(r"(?i)(key|secret|password|sig)=", str(value)), name


def test_every_setting_the_code_reads_is_set(main: BicepFile) -> None:
    settings = app_settings(main)
    for name in DEFAULTS:
        if name in NOT_IN_AZURE:
            assert name not in settings, f"{name}: {NOT_IN_AZURE[name]}"
        elif name == "ServiceBusConnection__fullyQualifiedNamespace":
            assert name in settings
        else:
            assert name in settings, f"the code reads {name} but the template does not set it"
    for name in settings:
        if name.startswith("REDISFLUSH_"):
            assert name in DEFAULTS, f"{name} is set but no code reads it"
    assert settings["REDISFLUSH_REQUEST_QUEUE"] == "requestQueue.name"
    assert settings["REDISFLUSH_REPLY_QUEUE"] == "replyQueue.name"
    assert settings["REDISFLUSH_ARM_ENDPOINT"] == "environment().resourceManager"
    assert "flushScopes" in main.variables[settings["REDISFLUSH_ALLOWED_SCOPES"]]


def test_function_json_placeholders_and_connections_are_set(main: BicepFile) -> None:
    settings = app_settings(main)
    for function_json in ROOT.glob("*/function.json"):
        for binding in json.loads(function_json.read_text())["bindings"]:
            for value in binding.values():
                for name in re.findall(r"%(\w+)%", str(value)):
                    assert name in settings, f"{function_json}: %{name}%"
            connection = binding.get("connection")
            if connection:
                assert f"{connection}__fullyQualifiedNamespace" in settings


# -- role assignments ------------------------------------------------------------------------------

def role_id_of(main: BicepFile, assignment: Resource) -> str:
    expr = assignment.body["properties"]["roleDefinitionId"]
    m = re.fullmatch(r"subscriptionResourceId\('Microsoft.Authorization/roleDefinitions', "
                     r"roles\.(\w+)\)", expr)
    assert m, expr
    return main.variables["roles"][m.group(1)]


def test_app_role_assignments(main: BicepFile) -> None:
    got = {}
    for ra in main.of_type("Microsoft.Authorization/roleAssignments"):
        props = ra.body["properties"]
        assert props["principalId"] == "functionApp.identity.principalId"
        assert props["principalType"] == "ServicePrincipal"
        assert ra.body["name"].startswith("guid(")
        got[role_id_of(main, ra)] = ra.body["scope"]
    assert got == {SB_RECEIVER: "serviceBus", SB_SENDER: "serviceBus",
                   BLOB_OWNER: "storage", METRICS_PUBLISHER: "appInsights"}


def test_role_ids_are_the_built_in_ones(main: BicepFile) -> None:
    assert main.variables["roles"] == {
        "serviceBusDataReceiver": SB_RECEIVER, "serviceBusDataSender": SB_SENDER,
        "storageBlobDataOwner": BLOB_OWNER, "monitoringMetricsPublisher": METRICS_PUBLISHER,
        "redisCacheContributor": REDIS_CACHE_CONTRIBUTOR}
    for value in main.variables["roles"].values():
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                            value)


def test_custom_roles_hold_only_the_flush_and_operation_reads(roles_module: BicepFile) -> None:
    assert roles_module.target_scope == "subscription"
    flush = roles_module.resources["flushRole"]
    assert flush.type == "Microsoft.Authorization/roleDefinitions"
    assert flush.condition == "createFlushRole"
    (perm,) = flush.body["properties"]["permissions"]
    assert set(perm["actions"]) == {FLUSH} | OPERATION_READS
    assert perm["dataActions"] == [] and perm["notActions"] == []
    assert flush.body["properties"]["type"] == "CustomRole"
    assert flush.body["properties"]["assignableScopes"] == ["subscription().id"]
    reader = roles_module.resources["operationReader"]
    (perm,) = reader.body["properties"]["permissions"]
    actions = perm["actions"]
    if isinstance(actions, Expr):          # a `var` holding the list
        actions = roles_module.variables[actions]
    assert set(actions) == OPERATION_READS
    assert not any("*" in action for action in actions)
    assignment = roles_module.resources["operationReaderAssignment"]
    assert assignment.body["properties"]["roleDefinitionId"] == "operationReader.id"
    assert assignment.condition == "grantOperationStatusRead"
    assert roles_module.outputs["flushRoleDefinitionId"].startswith("createFlushRole ?")


def test_flush_role_is_assigned_on_each_scope(main: BicepFile,
                                              scope_module: BicepFile) -> None:
    roles = main.modules["flushRoles"]
    assert roles.body["scope"] == "subscription()"
    assert roles.body["params"]["createFlushRole"] == "!useBuiltInRole"
    assert roles.body["params"]["principalId"] == "functionApp.identity.principalId"
    per_scope = main.modules["flushScope"]
    assert per_scope.loop == "rg in flushScopes"
    assert per_scope.body["scope"] == "resourceGroup(rg)"
    choice = per_scope.body["params"]["roleDefinitionId"]
    assert choice == ("useBuiltInRole ? redisCacheContributorId : "
                      "flushRoles.outputs.flushRoleDefinitionId")
    assert REDIS_CACHE_CONTRIBUTOR in json.dumps(main.variables["roles"])
    assert "roles.redisCacheContributor" in main.variables["redisCacheContributorId"]
    for module in main.modules.values():
        assert (INFRA / module.path).is_file()
    assert scope_module.target_scope == "resourceGroup"
    (assignment,) = scope_module.resources.values()
    assert assignment.body["properties"]["roleDefinitionId"] == "roleDefinitionId"
    assert set(scope_module.params) == set(per_scope.body["params"])
    assert set(load(INFRA / "modules" / "flush-roles.bicep").params) <= \
        set(roles.body["params"]) | {n for n, p in load(
            INFRA / "modules" / "flush-roles.bicep").params.items() if p.has_default}


def test_expressions_stay_expressions(main: BicepFile) -> None:
    # guards the reader: a quoted literal and a reference must not be confused
    settings = app_settings(main)
    assert isinstance(settings["REDISFLUSH_API_VERSION"], Expr)
    assert not isinstance(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"], Expr)
