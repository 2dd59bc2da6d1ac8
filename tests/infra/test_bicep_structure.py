"""infra/*.bicep, read with a light parser (tests/infra/bicep.py): the structure the app and
docs/design.md rely on. No Bicep compiler is available here; `az bicep build` is the next check."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .bicep import BicepFile, BicepSyntaxError, Expr, Resource, load, parse_array, parse_object

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in role definition ids (Azure built-in roles reference).
SB_RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
SB_SENDER = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
SB_OWNER = "090c5cfd-751d-490a-894a-3ce6f1109419"  # Azure Service Bus Data Owner
BLOB_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
STORAGE_TABLE_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
REDIS_CACHE_CONTRIBUTOR = "e0f68234-74aa-48ed-b826-c38b57376e17"
MANAGED_REDIS_CONTRIBUTOR = "3015e5ed-6856-4ab3-b2f0-b8492aa30ca6"

# The Microsoft.Cache actions the app's identity needs, and nothing more (names as the Azure
# RBAC "permissions for Databases" reference writes them; infra/modules/flush-roles.bicep says
# how each was checked). RBAC compares them case-insensitively.
CLASSIC_FLUSH = "Microsoft.Cache/redis/flush/action"
CLASSIC_READ = "Microsoft.Cache/redis/read"
DATABASE_FLUSH = "Microsoft.Cache/redisEnterprise/databases/flush/action"
DATABASE_READ = "Microsoft.Cache/redisEnterprise/databases/read"
CLUSTER_READ = "Microsoft.Cache/redisEnterprise/read"
DATABASE_OPERATION_READ = "Microsoft.Cache/redisEnterprise/databases/operationResults/read"
OPERATION_READS = {"Microsoft.Cache/locations/operationResults/read",
                   "Microsoft.Cache/locations/operationsStatus/read"}
ALL_ACTIONS = {CLASSIC_FLUSH, CLASSIC_READ, DATABASE_FLUSH, DATABASE_READ, CLUSTER_READ,
               DATABASE_OPERATION_READ} | OPERATION_READS
ROLE_ACTIONS = {                                     # custom role symbol -> its actions
    "flushRole": {CLASSIC_FLUSH, CLASSIC_READ} | OPERATION_READS,
    "managedRedisRole": {DATABASE_FLUSH, DATABASE_READ, CLUSTER_READ,
                         DATABASE_OPERATION_READ} | OPERATION_READS,
    "operationReader": OPERATION_READS,
    "lister": {CLASSIC_READ, CLUSTER_READ, DATABASE_READ},
}

def _documented_settings() -> set[str]:
    """Every setting named in docs/design.md's "Settings" table (the project's contract)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    names: set[str] = set()
    for row in rows:
        first = row.split("|")[1]
        for name in re.findall(r"`([A-Za-z_]+)`", first):
            names.add(name)
        for suffix in re.findall(r"`(_[A-Z_]+|__[A-Za-z]+)`", first):
            names.add(suffix)
    # "`AzureWebJobsStorage` (or `__accountName` / `__tableServiceUri`)", "`_POLL_QUEUE`": expand
    expanded = set()
    for name in names:
        if name.startswith("__"):
            expanded.add("AzureWebJobsStorage" + name)
        elif name.startswith("_"):
            expanded.add("REDISFLUSH" + name)
        else:
            expanded.add(name)
    return expanded


DESIGN_SETTINGS = _documented_settings()

DESIGN_DEFAULTS = {
    "REDISFLUSH_REQUEST_QUEUE": "redis-flush-requests",
    "REDISFLUSH_POLL_QUEUE": "redis-flush-polls",
    "REDISFLUSH_EVENTS_TOPIC": "redis-flush-events",
    "REDISFLUSH_REPLY_QUEUE": "redis-flush-replies",
}

# Settings the app reads that the template must not set, and why.
NOT_IN_AZURE = {
    "ServiceBusConnection": "a connection string: the identity-based form is set instead",
    "AzureWebJobsStorage": "a connection string: AzureWebJobsStorage__accountName is set instead",
    "AZURE_CLIENT_ID": "only for a user-assigned identity; the app's is system-assigned",
    "REDISFLUSH_LOCAL_DIR": "the local bus and emulator state, local mode only",
}

PYTHON_VERSIONS = ["3.11", "3.12", "3.13"]

# Oldest API version accepted per type (Flex Consumption needs Microsoft.Web 2023-12-01+).
MIN_API = {
    "Microsoft.ServiceBus/namespaces": "2021-11-01",
    "Microsoft.ServiceBus/namespaces/queues": "2021-11-01",
    "Microsoft.ServiceBus/namespaces/topics": "2021-11-01",
    "Microsoft.ServiceBus/namespaces/topics/subscriptions": "2021-11-01",
    "Microsoft.Storage/storageAccounts": "2023-01-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2023-01-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-01-01",
    "Microsoft.Storage/storageAccounts/tableServices": "2023-01-01",
    "Microsoft.Storage/storageAccounts/tableServices/tables": "2023-01-01",
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


def allowed_values(bf: BicepFile, param: str) -> list[Any]:
    """The values of a param's @allowed([...]) decorator."""
    (decorator,) = [d for d in bf.params[param].decorators if d.startswith("@allowed(")]
    inner = decorator[len("@allowed("):-1].strip()
    assert inner.startswith("[") and inner.endswith("]"), decorator
    return parse_array(inner[1:-1])


def custom_role_actions(bf: BicepFile, symbol: str) -> list[str]:
    role = bf.resources[symbol]
    assert role.type == "Microsoft.Authorization/roleDefinitions"
    (perm,) = role.body["properties"]["permissions"]
    assert perm["notActions"] == [] and perm["dataActions"] == [] \
        and perm["notDataActions"] == [], symbol
    actions = perm["actions"]
    if isinstance(actions, Expr):          # a `var` holding the list
        actions = bf.variables[actions]
    assert isinstance(actions, list) and all(isinstance(a, str) for a in actions), symbol
    return actions


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
                "int", "bool", "array", "object"}
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


def test_every_lock_is_one_minute(main: BicepFile) -> None:
    # README ("Service Bus entities"): lock 1 min; the app's invocations and the reply session
    # renewal are sized for it.
    locked = [*main.of_type("Microsoft.ServiceBus/namespaces/queues"),
              *main.of_type("Microsoft.ServiceBus/namespaces/topics/subscriptions")]
    assert len(locked) == 4
    for entity in locked:
        assert entity.body["properties"]["lockDuration"] == "PT1M", entity.symbol


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
        assert main.params[param].default == DESIGN_DEFAULTS[setting]


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
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    # Flex rejects these as app settings: the runtime lives in functionAppConfig
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                "WEBSITE_RUN_FROM_PACKAGE"} & set(app_settings(main))


def test_python_versions_are_the_supported_ones(main: BicepFile) -> None:
    # docs/design.md "Platform": 3.11-3.13 (3.10 reached end of life); 3.13 by default.
    assert allowed_values(main, "pythonVersion") == PYTHON_VERSIONS
    assert main.params["pythonVersion"].default == "3.13"
    assert main.params["pythonVersion"].type == "string"
    doc = json.loads((INFRA / "main.parameters.example.json").read_text())
    assert doc["parameters"]["pythonVersion"]["value"] in PYTHON_VERSIONS
    for text in ((INFRA / "README.md").read_text(), (ROOT / "docs" / "azure.md").read_text()):
        assert "3.11" in text and "3.13" in text
        assert "3.10-3.12" not in text


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
        if any(d.startswith("@allowed(") for d in main.params[name].decorators):
            assert entry["value"] in allowed_values(main, name), name


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


def test_every_documented_setting_is_set(main: BicepFile) -> None:
    settings = app_settings(main)
    for name in DESIGN_SETTINGS:
        if name in NOT_IN_AZURE:
            assert name not in settings, f"{name}: {NOT_IN_AZURE[name]}"
        else:
            assert name in settings, f"docs/design.md lists {name} but the template does not set it"
    for name in settings:
        if name.startswith(("REDISFLUSH_", "AzureWebJobsStorage", "ServiceBusConnection")):
            assert name in DESIGN_SETTINGS, f"{name} is set but docs/design.md does not list it"


def test_every_setting_the_code_reads_is_set(main: BicepFile) -> None:
    # imported here: the settings module is the code's own list, the one thing this file needs
    # from the package, so the rest of the file does not depend on it
    from redisflush.settings import DEFAULTS
    settings = app_settings(main)
    for name in DEFAULTS:
        if name in NOT_IN_AZURE:
            assert name not in settings, f"{name}: {NOT_IN_AZURE[name]}"
        else:
            assert name in settings, f"the code reads {name} but the template does not set it"
    for name in DEFAULTS:
        assert name in DESIGN_SETTINGS, f"the code reads {name}: docs/design.md should list it"


def test_new_settings_have_the_documented_values(main: BicepFile) -> None:
    settings = app_settings(main)
    assert settings["REDISFLUSH_LEDGER_TABLE"] == "ledgerTable.name"
    assert main.params["ledgerTableName"].default == "redisflushrequests"
    assert settings["REDISFLUSH_ENTERPRISE_API_VERSION"] == "enterpriseApiVersion"
    assert main.params["enterpriseApiVersion"].default == "2025-07-01"
    assert settings["REDISFLUSH_API_VERSION"] == "cacheApiVersion"
    assert main.params["cacheApiVersion"].default == "2023-08-01"
    assert settings["REDISFLUSH_MAX_TARGETS"] == "string(maxTargets)"
    max_targets = main.params["maxTargets"]
    assert max_targets.type == "int" and max_targets.default == 50
    assert "@maxValue(50)" in max_targets.decorators and "@minValue(1)" in max_targets.decorators
    assert settings["REDISFLUSH_TIMEOUT_SECONDS"] == "string(timeoutSeconds)"
    assert settings["AzureWebJobsStorage__accountName"] == "storage.name"


def test_ledger_endpoint_follows_the_cloud(main: BicepFile) -> None:
    # In a sovereign cloud the account name alone would give the ledger
    # https://{account}.table.core.windows.net (redisflush/ledger_tables.py); the table
    # endpoint comes from the storage account itself, like the ARM endpoint and the Service
    # Bus host, and the ledger prefers it to the account name.
    settings = app_settings(main)
    assert settings["AzureWebJobsStorage__tableServiceUri"] == \
        "storage.properties.primaryEndpoints.table"
    assert isinstance(settings["AzureWebJobsStorage__tableServiceUri"], Expr)
    assert "core.windows.net" not in main.text.split("appSettings:", 1)[1].split("]", 1)[0]


def test_settings_reference_existing_resources(main: BicepFile) -> None:
    settings = app_settings(main)
    assert settings["REDISFLUSH_REQUEST_QUEUE"] == "requestQueue.name"
    assert settings["REDISFLUSH_REPLY_QUEUE"] == "replyQueue.name"
    assert settings["REDISFLUSH_ARM_ENDPOINT"] == "environment().resourceManager"
    assert "flushScopes" in main.variables[settings["REDISFLUSH_ALLOWED_SCOPES"]]


def test_function_json_placeholders_and_connections_are_set(main: BicepFile) -> None:
    settings = app_settings(main)
    checked, placeholders = set(), set()
    for function_json in ROOT.glob("*/function.json"):
        checked.add(function_json.parent.name)
        for binding in json.loads(function_json.read_text())["bindings"]:
            for value in binding.values():
                for name in re.findall(r"%(\w+)%", str(value)):
                    placeholders.add(name)
                    assert name in settings, f"{function_json}: %{name}%"
            connection = binding.get("connection")
            if connection:
                assert f"{connection}__fullyQualifiedNamespace" in settings
    # the loops above assert nothing when they find nothing: what they must have seen
    assert checked == {"FlushTrigger", "PollOrchestrator", "LedgerPurge"}, checked
    assert {"REDISFLUSH_REQUEST_QUEUE", "REDISFLUSH_POLL_QUEUE"} <= placeholders, placeholders


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
        got.setdefault(role_id_of(main, ra), []).append(ra.body["scope"])
    assert got == {SB_RECEIVER: ["requestQueue", "pollQueue"], SB_SENDER: ["serviceBus"],
                   SB_OWNER: ["requestQueue", "pollQueue"],
                   BLOB_OWNER: ["storage"], STORAGE_TABLE_CONTRIBUTOR: ["storage"],
                   METRICS_PUBLISHER: ["appInsights"]}


def test_queue_manage_for_scaling_is_on_the_trigger_queues_only_and_can_be_dropped(
        main: BicepFile) -> None:
    """Target-based scaling reads the queue length (the Manage claim); never the namespace."""
    owners = [ra for ra in main.of_type("Microsoft.Authorization/roleAssignments")
              if role_id_of(main, ra) == SB_OWNER]
    assert {ra.body["scope"] for ra in owners} == {"requestQueue", "pollQueue"}
    assert all(ra.condition == "grantQueueManageForScaling" for ra in owners)
    assert main.params["grantQueueManageForScaling"].default is True


def test_role_ids_are_the_built_in_ones(main: BicepFile) -> None:
    assert main.variables["roles"] == {
        "serviceBusDataReceiver": SB_RECEIVER, "serviceBusDataSender": SB_SENDER,
        "serviceBusDataOwner": SB_OWNER,
        "storageBlobDataOwner": BLOB_OWNER,
        "storageTableDataContributor": STORAGE_TABLE_CONTRIBUTOR,
        "monitoringMetricsPublisher": METRICS_PUBLISHER,
        "redisCacheContributor": REDIS_CACHE_CONTRIBUTOR,
        "managedRedisContributor": MANAGED_REDIS_CONTRIBUTOR}
    for value in main.variables["roles"].values():
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                            value)


def test_custom_roles_hold_exactly_the_needed_actions(roles_module: BicepFile) -> None:
    assert roles_module.target_scope == "subscription"
    custom = {symbol for symbol, res in roles_module.resources.items()
              if res.type == "Microsoft.Authorization/roleDefinitions"}
    assert custom == set(ROLE_ACTIONS)
    union: set[str] = set()
    for symbol, expected in ROLE_ACTIONS.items():
        actions = custom_role_actions(roles_module, symbol)
        assert len(actions) == len(set(a.lower() for a in actions)), f"{symbol}: a duplicate"
        assert set(actions) == expected, (symbol, set(actions) ^ expected)
        assert not any("*" in action for action in actions), symbol
        props = roles_module.resources[symbol].body["properties"]
        assert props["type"] == "CustomRole"
        assert props["assignableScopes"] == ["subscription().id"]
        assert "${roleNameSuffix}" in props["roleName"]     # role names are tenant-unique
        union |= set(actions)
    assert union == ALL_ACTIONS
    # no wildcard in any string of the module, and no Microsoft.Cache action outside the list
    literals = re.findall(r"'([^']*)'", roles_module.text)
    assert not [text for text in literals if "*" in text]
    for text in literals:
        if text.startswith("Microsoft.Cache/"):
            assert text in ALL_ACTIONS, text


def test_custom_roles_are_conditional_and_assigned_where_they_work(
        roles_module: BicepFile) -> None:
    res = roles_module.resources
    assert res["flushRole"].condition == "createFlushRole"
    assert res["managedRedisRole"].condition == "createManagedRedisRole"
    assert res["operationReader"].condition == "grantOperationStatusRead"
    assert res["lister"].condition == "grantSubscriptionListRead"
    # subscription-level assignments: only the operation reader and the lister (reads only);
    # the flush roles are assigned per resource group by flush-scope.bicep
    assignments = {s: r for s, r in res.items()
                   if r.type == "Microsoft.Authorization/roleAssignments"}
    assert {r.body["properties"]["roleDefinitionId"] for r in assignments.values()} == \
        {"operationReader.id", "lister.id"}
    assert assignments["operationReaderAssignment"].condition == "grantOperationStatusRead"
    assert assignments["listerAssignment"].condition == "grantSubscriptionListRead"
    for ra in assignments.values():
        assert ra.body["properties"]["principalId"] == "principalId"
        assert ra.body["properties"]["principalType"] == "ServicePrincipal"
    outputs = roles_module.outputs
    assert outputs["flushRoleDefinitionId"] == "createFlushRole ? flushRole.id : ''"
    assert outputs["managedRedisRoleDefinitionId"] == \
        "createManagedRedisRole ? managedRedisRole.id : ''"


def test_the_role_module_says_how_action_names_were_checked() -> None:
    text = (INFRA / "modules" / "flush-roles.bicep").read_text()
    assert "permissions/databases" in text            # the RBAC operations reference
    assert "InvalidActionOrNotAction" in text         # what ARM does with an unknown action
    assert "az provider operation show" in text


def test_flush_roles_are_assigned_on_each_scope(main: BicepFile,
                                               scope_module: BicepFile) -> None:
    roles = main.modules["flushRoles"]
    assert roles.body["scope"] == "subscription()"
    params = roles.body["params"]
    assert params["createFlushRole"] == "!useBuiltInRole"
    assert params["createManagedRedisRole"] == "managedRedisChoice == 'custom'"
    assert params["grantOperationStatusRead"] == "grantOperationStatusRead"
    assert params["grantSubscriptionListRead"] == "grantSubscriptionListRead"
    assert params["principalId"] == "functionApp.identity.principalId"
    per_scope = main.modules["flushScope"]
    assert per_scope.loop == "rg in flushScopes"
    assert per_scope.body["scope"] == "resourceGroup(rg)"
    assert per_scope.body["params"]["roleDefinitionIds"] == "flushScopeRoleIds"
    variables = main.variables
    assert variables["flushScopeRoleIds"] == \
        "concat([classicFlushRoleId], managedRedisFlushRoleIds)"
    assert variables["classicFlushRoleId"] == \
        "useBuiltInRole ? redisCacheContributorId : flushRoles.outputs.flushRoleDefinitionId"
    assert variables["managedRedisFlushRoleIds"] == (
        "managedRedisChoice == 'none' ? [] : [managedRedisChoice == 'builtIn' ? "
        "managedRedisContributorId : flushRoles.outputs.managedRedisRoleDefinitionId]")
    assert variables["managedRedisChoice"] == (
        "managedRedisAccess == 'none' ? 'none' : "
        "(useBuiltInRole ? 'builtIn' : managedRedisAccess)")
    assert allowed_values(main, "managedRedisAccess") == ["custom", "builtIn", "none"]
    assert main.params["managedRedisAccess"].default == "custom"
    assert "roles.redisCacheContributor" in variables["redisCacheContributorId"]
    assert "roles.managedRedisContributor" in variables["managedRedisContributorId"]
    for module in main.modules.values():
        assert (INFRA / module.path).is_file()
    assert scope_module.target_scope == "resourceGroup"
    (assignment,) = scope_module.resources.values()
    assert assignment.type == "Microsoft.Authorization/roleAssignments"
    assert assignment.loop == "roleDefinitionId in roleDefinitionIds"
    assert assignment.body["properties"]["roleDefinitionId"] == "roleDefinitionId"
    assert assignment.body["properties"]["principalId"] == "principalId"
    assert "roleDefinitionId" in assignment.body["name"]      # one name per role
    assert set(scope_module.params) == set(per_scope.body["params"])
    roles_params = load(INFRA / "modules" / "flush-roles.bicep").params
    assert set(roles_params) <= set(params) | {n for n, p in roles_params.items() if p.has_default}
    assert set(params) <= set(roles_params)


def managed_redis_roles(useBuiltIn: bool, access: str) -> list[str]:
    """Evaluates main.bicep's role choice (checked verbatim above) for one set of parameters."""
    choice = "none" if access == "none" else ("builtIn" if useBuiltIn else access)
    classic = "Redis Cache Contributor" if useBuiltIn else "Redis Cache Flusher"
    managed = {"none": [], "builtIn": ["Azure Managed Redis Contributor"],
               "custom": ["Managed Redis Flusher"]}[choice]
    return [classic, *managed]


@pytest.mark.parametrize("use_built_in,access,expected", [
    (False, "custom", ["Redis Cache Flusher", "Managed Redis Flusher"]),
    (False, "builtIn", ["Redis Cache Flusher", "Azure Managed Redis Contributor"]),
    (False, "none", ["Redis Cache Flusher"]),
    (True, "custom", ["Redis Cache Contributor", "Azure Managed Redis Contributor"]),
    (True, "none", ["Redis Cache Contributor"]),
])
def test_role_choice_table(use_built_in: bool, access: str, expected: list[str]) -> None:
    # the table docs/azure.md and infra/README.md give
    assert managed_redis_roles(use_built_in, access) == expected


# -- the request ledger ----------------------------------------------------------------------

def test_ledger_table_lives_in_the_app_storage_account(main: BicepFile) -> None:
    table = one(main, "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert table.body["name"] == "ledgerTableName"
    service = main.resources[table.body["parent"]]
    assert service.type == "Microsoft.Storage/storageAccounts/tableServices"
    assert service.body["name"] == "default"
    account = main.resources[service.body["parent"]]
    assert account.type == "Microsoft.Storage/storageAccounts"
    # the same account the host (and the ledger adapter) reach through AzureWebJobsStorage
    assert app_settings(main)["AzureWebJobsStorage__accountName"] == f"{account.symbol}.name"
    param = main.params["ledgerTableName"]
    assert "@minLength(3)" in param.decorators and "@maxLength(63)" in param.decorators
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", param.default)
    assert main.outputs["ledgerTable"] == "ledgerTable.name"


def test_table_role_is_scoped_to_the_storage_account_only(main: BicepFile,
                                                          roles_module: BicepFile,
                                                          scope_module: BicepFile) -> None:
    table_roles = [ra for ra in main.of_type("Microsoft.Authorization/roleAssignments")
                   if "storageTableDataContributor" in ra.body["properties"]["roleDefinitionId"]]
    (ra,) = table_roles
    assert ra.body["scope"] == "storage"
    assert main.resources["storage"].type == "Microsoft.Storage/storageAccounts"
    assert ra.body["properties"]["principalId"] == "functionApp.identity.principalId"
    assert ra.body["name"] == \
        "guid(storage.id, functionApp.id, roles.storageTableDataContributor)"
    # nowhere else: not in the modules (subscription or resource group scopes)
    for bf in (roles_module, scope_module):
        assert STORAGE_TABLE_CONTRIBUTOR not in bf.text
        assert "storageTableDataContributor" not in bf.text
    assert main.text.count(STORAGE_TABLE_CONTRIBUTOR) == 1


def test_expressions_stay_expressions(main: BicepFile) -> None:
    # guards the reader: a quoted literal and a reference must not be confused
    settings = app_settings(main)
    assert isinstance(settings["REDISFLUSH_API_VERSION"], Expr)
    assert not isinstance(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"], Expr)


# -- nested deployments: names that two installations never share ----------------------------

def test_module_deployment_names_are_unique_per_installation(main: BicepFile) -> None:
    """A module becomes a nested deployment named by its `name`. flushRoles deploys at
    subscription scope, where Bicep gives it the resource group's location
    (resourceGroup().location) and ARM keys deployments by name alone, a name keeping its first
    location: a second installation with the same namePrefix in a resource group of another
    region (staging in westeurope, production in northeurope, both from the example parameters)
    failed with InvalidDeploymentLocation, and in one region overwrote the first's deployment
    record. The flushScope deployments land in the flushed groups, which two installations may
    share. Every module name must carry `suffix` (uniqueString of this resource group and
    namePrefix), as every resource name does."""
    assert "resourceGroup().id" in main.variables["suffix"]
    for module in main.modules.values():
        name = module.body["name"]
        assert isinstance(name, str) and "${suffix}" in name, (module.symbol, name)
        # deployment names: at most 64 characters (namePrefix 11, uniqueString 13)
        longest = re.sub(r"\$\{uniqueString\([^)]*\)\}|\$\{suffix\}", "x" * 13,
                         name.replace("${namePrefix}", "x" * 11))
        assert len(longest) <= 64, (module.symbol, longest)


def test_receive_is_granted_on_the_trigger_queues_only(main: BicepFile) -> None:
    """The app receives from nothing but its two trigger queues (the host's listeners; its own
    client only sends). Data Receiver on the namespace let its identity also receive, and so
    consume, the reply queue's sessions and every topic subscription's events: the waiting
    pipelines' replies and the subscribers' events. Sending stays namespace-wide: a request's
    ReplyTo may name any queue of the namespace."""
    receivers = [ra for ra in main.of_type("Microsoft.Authorization/roleAssignments")
                 if role_id_of(main, ra) == SB_RECEIVER]
    assert sorted(ra.body["scope"] for ra in receivers) == ["pollQueue", "requestQueue"]
    for ra in receivers:
        assert ra.condition is None          # needed with or without the Manage claim
        assert ra.body["name"].startswith(f"guid({ra.body['scope']}.id, functionApp.id, ")
    senders = [ra for ra in main.of_type("Microsoft.Authorization/roleAssignments")
               if role_id_of(main, ra) == SB_SENDER]
    assert [ra.body["scope"] for ra in senders] == ["serviceBus"]


def test_scopes_in_other_subscriptions_survive_a_redeployment(main: BicepFile) -> None:
    """docs/azure.md and infra/README.md have caches in other subscriptions (a geo-replica
    there included) flushed by deploying the role modules there and adding their groups to
    REDISFLUSH_ALLOWED_SCOPES. The template sets siteConfig.appSettings, which replaces the
    app's whole settings list on every deployment, and built the setting from flushScopes
    alone: a scope added by hand was dropped by the next `az deployment group create`, and
    those caches' flushes were then Rejected OutsideAllowedScopes. The template must take
    them as a parameter and the docs must send the reader there."""
    param = main.params["additionalAllowedScopes"]
    assert param.type == "array" and param.default == []
    assert any(d.startswith("@description") for d in param.decorators)
    scopes = main.variables[app_settings(main)["REDISFLUSH_ALLOWED_SCOPES"]]
    assert "flushScopes" in scopes and "additionalAllowedScopes" in scopes
    assert main.outputs["allowedScopes"] == "allowedScopes"
    for text in ((INFRA / "README.md").read_text(), (ROOT / "docs" / "azure.md").read_text()):
        assert "additionalAllowedScopes" in text
        assert not re.search(r"add\s+those\s+groups\s+to\s+`REDISFLUSH_ALLOWED_SCOPES`", text)
    doc = json.loads((INFRA / "main.parameters.example.json").read_text())
    assert doc["parameters"]["additionalAllowedScopes"]["value"] == []


def test_func_start_against_azure_names_what_it_needs_and_what_it_must_not_share() -> None:
    """README, "Against real Azure": `func start` on a workstation keeps its ledger in Azurite.
    Pointed at the namespace of a deployed app (the section said only "your namespace"), both
    hosts take requests and poll messages from the same queues with two ledgers, so a
    redelivered request can be flushed by each; and the identity needs the app's flush roles,
    not only Service Bus ones (the section named only Data Receiver and Sender), or every flush
    ends Failed AuthorizationFailed. REDISFLUSH_ALLOWED_SCOPES is empty in the sample, which
    means whatever that identity (often an Owner) can reach."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Against real Azure", 1)[1].split("\n## ", 1)[0]
    func_start = section.split("- **Python**", 1)[0]
    flat = " ".join(func_start.split())
    assert "deployed" in flat and "ledger" in flat and "never one" in flat
    assert '"Roles of the app"' in flat
    assert "REDISFLUSH_ALLOWED_SCOPES" in flat


def test_maximum_instance_count_is_described_as_a_per_function_limit(main: BicepFile) -> None:
    """Flex Consumption applies maximumInstanceCount to each function group's on-demand
    instances, not to the app's combined instances (Azure Functions "Scale" reference;
    Service Bus and timer triggers each scale in a group of their own). The parameter and
    the docs called it the whole app's limit, shared by its functions: with the default 40,
    FlushTrigger and PollOrchestrator may each run 40 instances, so up to 80 processes pace
    ARM independently, twice what docs/azure.md's advice on capping pacers counted on."""
    (description,) = [d for d in main.params["maximumInstanceCount"].decorators
                      if d.startswith("@description(")]
    texts = {"main.bicep @description": description,
             "infra/README.md": (INFRA / "README.md").read_text(),
             "docs/azure.md": (ROOT / "docs" / "azure.md").read_text()}
    for where, text in texts.items():
        flat = " ".join(text.split())
        assert "whole app" not in flat, where
        assert "shared by its functions" not in flat, where
        assert "each function" in flat, where
