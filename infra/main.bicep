// redisflush: everything the function app needs, identity-based end to end.
//
//   az deployment group create -g RG -f infra/main.bicep -p @infra/main.parameters.json
//
// Deploys: Service Bus namespace (Standard) with the request and poll queues, the events topic
// (duplicate detection on all three) and its `all` subscription, the session-enabled reply
// queue (lock 1 minute everywhere); a storage account (no shared keys) holding the host state,
// the Flex deployment package and the request ledger table; Log Analytics + Application
// Insights (Entra ID ingestion only); a Flex Consumption (FC1) Python function app with a
// system-assigned managed identity; and the role assignments it needs.
// For flushing (modules/flush-roles.bicep says which actions and how their names were checked):
// - per resource group in `flushScopes`: custom `Redis Cache Flusher` (Azure Cache for Redis)
//   and `Managed Redis Flusher` (Azure Managed Redis databases), or the built-in Redis Cache
//   Contributor / Azure Managed Redis Contributor;
// - on the subscription: `Redis Cache Operation Reader` (ARM's operation URLs live there) and
//   `Redis Cache Lister` (selectors that name only a subscription).
// The ledger: table REDISFLUSH_LEDGER_TABLE in this storage account, and Storage Table Data
// Contributor for the app's identity on this storage account only.
// The deploying identity needs Owner (or User Access Administrator + Contributor) on the
// resource group, and on the subscription for the custom role definitions.

targetScope = 'resourceGroup'

@description('Azure region for every resource (must offer Flex Consumption).')
param location string = resourceGroup().location

@description('Prefix of resource names (letters and digits, 3-11 characters).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'redisflush'

@description('Resource groups (in this subscription) whose caches the app may flush. Each gets a role assignment; REDISFLUSH_ALLOWED_SCOPES is set to exactly these (and additionalAllowedScopes).')
@minLength(1)
param flushScopes array

@description('Resource id prefixes outside this subscription whose caches the app may also flush, e.g. /subscriptions/{sub}/resourceGroups/{rg} (caches or geo-replicas in other subscriptions), added to REDISFLUSH_ALLOWED_SCOPES. Their roles are deployed there with modules/flush-roles.bicep and modules/flush-scope.bicep. List them here, not in the app settings: every deployment replaces the whole settings list.')
param additionalAllowedScopes array = []

@description('Assign the built-in Redis Cache Contributor (and, unless managedRedisAccess is none, Azure Managed Redis Contributor) on flushScopes instead of the least-privilege custom flush roles.')
param useBuiltInRole bool = false

@description('Azure Managed Redis (Microsoft.Cache/redisEnterprise) databases: custom = least-privilege Managed Redis Flusher role; builtIn = Azure Managed Redis Contributor (if ARM refuses the custom role because Microsoft.Cache does not publish redisEnterprise/databases/flush/action); none = classic caches only.')
@allowed([
  'custom'
  'builtIn'
  'none'
])
param managedRedisAccess string = 'custom'

@description('Assign the operation-status read role on this subscription (ARM operation URLs are subscription-level: without it, polling answers 403).')
param grantOperationStatusRead bool = true

@description('Assign a read-only lister role (cache, cluster and database reads, never keys) on this subscription, so selectors that name only a subscription can list every resource group. false: reads stay inside flushScopes and selectors must name a resource group.')
param grantSubscriptionListRead bool = true

@description('Assign Azure Service Bus Data Owner on the request and poll queues only (not the namespace), so the scale controller can read their length: target-based scaling of a Service Bus trigger needs the Manage claim. That role is full control of those two queues (the app could also delete or reconfigure them). false: Data Receiver alone, and both triggers scale incrementally, more slowly under a burst of requests.')
param grantQueueManageForScaling bool = true

@description('Service Bus with Entra ID only (no SAS keys, no connection strings). Set false to allow `--connection-string` senders.')
param disableLocalAuth bool = true

@description('Python version of the function app (Flex Consumption offers 3.10-3.13; the app supports 3.11-3.13).')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.13'

@description('Flex Consumption scale-out limit of each function (FlushTrigger, PollOrchestrator and LedgerPurge each scale on instances of their own, up to this many each: Flex applies it per function group, not to the app\'s combined instances). Each instance paces ARM on its own: a lower limit means fewer independent pacers (docs/azure.md, "Scaling and ARM\'s limits").')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption instance size (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('REDISFLUSH_TIMEOUT_SECONDS: default time to follow a flush (30-86400).')
@minValue(30)
@maxValue(86400)
param timeoutSeconds int = 1800

@description('REDISFLUSH_API_VERSION: Microsoft.Cache/redis api-version (flush and list).')
param cacheApiVersion string = '2023-08-01'

@description('REDISFLUSH_ENTERPRISE_API_VERSION: Microsoft.Cache/redisEnterprise api-version (database get, flush, list).')
param enterpriseApiVersion string = '2025-07-01'

@description('REDISFLUSH_MAX_TARGETS: most caches one request may flush (messages are sized for 50).')
@minValue(1)
@maxValue(50)
param maxTargets int = 50

@description('REDISFLUSH_LEDGER_TABLE: the request ledger table, in the storage account of the app (3-63 letters and digits, starting with a letter).')
@minLength(3)
@maxLength(63)
param ledgerTableName string = 'redisflushrequests'

@description('Entity names (REDISFLUSH_REQUEST_QUEUE, _POLL_QUEUE, _EVENTS_TOPIC, _REPLY_QUEUE).')
param requestQueueName string = 'redis-flush-requests'
param pollQueueName string = 'redis-flush-polls'
param eventsTopicName string = 'redis-flush-events'
param replyQueueName string = 'redis-flush-replies'

@description('Topic subscription every event reaches (`watch` reads it by default).')
param eventsSubscriptionName string = 'all'

param tags object = {}

var suffix = uniqueString(resourceGroup().id, namePrefix)
var serviceBusName = '${namePrefix}-sb-${suffix}'
var storageName = toLower(take('${namePrefix}${suffix}', 24))
var functionAppName = '${namePrefix}-func-${suffix}'
var planName = '${namePrefix}-plan-${suffix}'
var workspaceName = '${namePrefix}-log-${suffix}'
var appInsightsName = '${namePrefix}-appi-${suffix}'
var deploymentContainerName = 'app-package'
var allowedScopes = join(concat(map(flushScopes, rg => '${subscription().id}/resourceGroups/${rg}'), additionalAllowedScopes), ',')

// Built-in role definition ids (Azure built-in roles reference).
var roles = {
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  redisCacheContributor: 'e0f68234-74aa-48ed-b826-c38b57376e17'
  managedRedisContributor: '3015e5ed-6856-4ab3-b2f0-b8492aa30ca6'
}
var redisCacheContributorId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.redisCacheContributor)
var managedRedisContributorId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.managedRedisContributor)
// What Managed Redis gets: useBuiltInRole moves it to the built-in role too, unless it is off.
var managedRedisChoice = managedRedisAccess == 'none' ? 'none' : (useBuiltInRole ? 'builtIn' : managedRedisAccess)
// The roles assigned on each resource group of flushScopes (modules/flush-scope.bicep).
var classicFlushRoleId = useBuiltInRole ? redisCacheContributorId : flushRoles.outputs.flushRoleDefinitionId
var managedRedisFlushRoleIds = managedRedisChoice == 'none' ? [] : [managedRedisChoice == 'builtIn' ? managedRedisContributorId : flushRoles.outputs.managedRedisRoleDefinitionId]
var flushScopeRoleIds = concat([classicFlushRoleId], managedRedisFlushRoleIds)
// NAME.servicebus.windows.net (or the sovereign cloud's suffix), from https://NAME...:443/
var serviceBusHost = split(split(serviceBus.properties.serviceBusEndpoint, '//')[1], ':')[0]

// -- monitoring ----------------------------------------------------------------------------

resource workspace 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true // ingestion with Entra ID only (Monitoring Metrics Publisher below)
  }
}

// -- storage (host state, the Flex deployment package, the request ledger) ----------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The request ledger: one row per (requestId, target) so a redelivered request never POSTs a
// flush twice (docs/design.md, "Request ledger"). The app reaches it through
// AzureWebJobsStorage__tableServiceUri (this cloud's table endpoint) with its identity.
resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

// -- Service Bus ---------------------------------------------------------------------------------

resource serviceBus 'Microsoft.ServiceBus/namespaces@2021-11-01' = {
  name: serviceBusName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: disableLocalAuth
  }
}

resource requestQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: serviceBus
  name: requestQueueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P1D'
  }
}

resource pollQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: serviceBus
  name: pollQueueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P2D' // longer than the longest follow time (86400 s)
  }
}

resource replyQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: serviceBus
  name: replyQueueName
  properties: {
    requiresSession: true // `send --wait` listens on its own session: ReplyToSessionId = its send's MessageId
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: false // unread replies of a gone pipeline just expire
    defaultMessageTimeToLive: 'P1D'
  }
}

resource eventsTopic 'Microsoft.ServiceBus/namespaces/topics@2021-11-01' = {
  parent: serviceBus
  name: eventsTopicName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    defaultMessageTimeToLive: 'P7D'
  }
}

resource allSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2021-11-01' = {
  parent: eventsTopic
  name: eventsSubscriptionName
  properties: {
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: false
    defaultMessageTimeToLive: 'P7D'
  }
}

// -- the function app (Flex Consumption) --------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      // Identity-based connections only: no account keys, no SAS, no connection strings to
      // our resources. Flex Consumption sets the runtime in functionAppConfig, not here.
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          // The ledger's table endpoint as this cloud names it (ACCOUNT.table.core.usgovcloudapi.net
          // in Azure Government): without it the ledger would build
          // https://{account}.table.core.windows.net from the account name (docs/azure.md,
          // "The request ledger").
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        {
          name: 'ServiceBusConnection__fullyQualifiedNamespace'
          value: serviceBusHost
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD'
        }
        {
          // Each Service Bus trigger locks up to maxConcurrentCalls (16, host.json) messages;
          // the worker's default pool (CPU count + 4 threads) would leave some waiting out
          // their lock and the function timeout. Flex Consumption scales each function on
          // instances of its own, so an instance runs one trigger's 16 at most; 32 leaves
          // room to spare. The per-instance consequences for ARM's limits: docs/azure.md,
          // "Scaling and ARM's limits".
          name: 'PYTHON_THREADPOOL_THREAD_COUNT'
          value: '32'
        }
        {
          name: 'REDISFLUSH_REQUEST_QUEUE'
          value: requestQueue.name
        }
        {
          name: 'REDISFLUSH_POLL_QUEUE'
          value: pollQueue.name
        }
        {
          name: 'REDISFLUSH_EVENTS_TOPIC'
          value: eventsTopic.name
        }
        {
          name: 'REDISFLUSH_REPLY_QUEUE'
          value: replyQueue.name
        }
        {
          name: 'REDISFLUSH_ARM_ENDPOINT'
          value: environment().resourceManager
        }
        {
          name: 'REDISFLUSH_API_VERSION'
          value: cacheApiVersion
        }
        {
          name: 'REDISFLUSH_ENTERPRISE_API_VERSION'
          value: enterpriseApiVersion
        }
        {
          name: 'REDISFLUSH_MAX_TARGETS'
          value: string(maxTargets)
        }
        {
          name: 'REDISFLUSH_LEDGER_TABLE'
          value: ledgerTable.name
        }
        {
          name: 'REDISFLUSH_TIMEOUT_SECONDS'
          value: string(timeoutSeconds)
        }
        {
          name: 'REDISFLUSH_ALLOWED_SCOPES'
          value: allowedScopes
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

// -- role assignments for the app ---------------------------------------------------------------

// Receive on the two trigger queues only: the app receives from nothing else (its own client
// only sends), and on the namespace its identity could also take the waiting pipelines' reply
// sessions and every subscriber's events.
resource requestQueueReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(requestQueue.id, functionApp.id, roles.serviceBusDataReceiver)
  scope: requestQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource pollQueueReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(pollQueue.id, functionApp.id, roles.serviceBusDataReceiver)
  scope: pollQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Send on the namespace: poll messages, events, and replies to whatever queue a request names
// as its ReplyTo.
resource sbSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, functionApp.id, roles.serviceBusDataSender)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Manage on the two trigger queues only: what target-based scaling reads (their runtime
// properties, so the scale controller sees the queue length and scheduled messages).
resource requestQueueOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantQueueManageForScaling) {
  name: guid(requestQueue.id, functionApp.id, roles.serviceBusDataOwner)
  scope: requestQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource pollQueueOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantQueueManageForScaling) {
  name: guid(pollQueue.id, functionApp.id, roles.serviceBusDataOwner)
  scope: pollQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The ledger: table data on this storage account only (not the resource group, not the
// subscription).
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionApp.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// -- flushing: least privilege by default -------------------------------------------------------

// Module names are nested deployment names, so they carry `suffix` like every resource name:
// flushRoles is a subscription-level deployment (in this resource group's location), and ARM
// keys those by name alone, keeping a name's first location, so a fixed name made a second
// installation in another region fail with InvalidDeploymentLocation; the flushScope
// deployments land in the flushed groups, which two installations may share.
module flushRoles 'modules/flush-roles.bicep' = {
  name: '${namePrefix}-flush-roles-${suffix}'
  scope: subscription()
  params: {
    roleNameSuffix: functionAppName
    principalId: functionApp.identity.principalId
    createFlushRole: !useBuiltInRole
    createManagedRedisRole: managedRedisChoice == 'custom'
    grantOperationStatusRead: grantOperationStatusRead
    grantSubscriptionListRead: grantSubscriptionListRead
  }
}

module flushScope 'modules/flush-scope.bicep' = [for rg in flushScopes: {
  name: '${namePrefix}-flush-${suffix}-${uniqueString(rg)}'
  scope: resourceGroup(rg)
  params: {
    principalId: functionApp.identity.principalId
    roleDefinitionIds: flushScopeRoleIds
  }
}]

output functionAppName string = functionApp.name
output serviceBusNamespace string = serviceBusHost
output requestQueue string = requestQueue.name
output replyQueue string = replyQueue.name
output eventsTopic string = eventsTopic.name
output eventsSubscription string = allSubscription.name
output allowedScopes string = allowedScopes
output appInsightsName string = appInsights.name
output ledgerTable string = ledgerTable.name
output storageAccount string = storage.name
