// Subscription-level part of the flush permissions (deployed by main.bicep as a module with
// scope: subscription()). Custom role definitions must be created at subscription level; the
// flush roles are assigned per resource group by flush-scope.bicep, never here.
//
// - `Redis Cache Flusher`: Azure Cache for Redis (Microsoft.Cache/redis): the flush action, the
//   cache read (the target and the list API of selectors) and the operation-status reads.
// - `Managed Redis Flusher`: Azure Managed Redis (Microsoft.Cache/redisEnterprise): the database
//   flush action, the database and cluster reads (GET database for its geo-replication group,
//   the cluster and database lists of selectors), the resource-scoped operation result read
//   (the signed Location header points at .../databases/{db}/operationresults/{id}) and the
//   subscription-level operation-status reads.
// - `Redis Cache Operation Reader`: only the operation-status reads. ARM's status URLs
//   (`/subscriptions/{sub}/providers/Microsoft.Cache/locations/{region}/operationresults/{id}`
//   for classic caches, `.../locations/{region}/operationsStatus/{id}` for Managed Redis) sit at
//   subscription level, so a resource-group assignment does not cover them: assigned on the
//   subscription. Reading an operation status reveals no cache data and changes nothing.
// - `Redis Cache Lister` (optional): only the three reads, on the subscription, so that a
//   selector naming just a subscription (`--subscription S --tag app=shop`) can list caches of
//   every resource group. Reads show settings and tags, never access keys (reading those is
//   a separate action, not granted).
//   REDISFLUSH_ALLOWED_SCOPES still limits what may be flushed.
//
// Action names, checked against the Azure RBAC resource provider operations reference for
// Microsoft.Cache ("Azure permissions for Databases", learn.microsoft.com
// /azure/role-based-access-control/permissions/databases, generated from the provider's
// operations list; versions of 2024-04 and 2026-02):
//   listed there:  Microsoft.Cache/redis/flush/action, Microsoft.Cache/redis/read,
//                  Microsoft.Cache/redisEnterprise/read,
//                  Microsoft.Cache/redisEnterprise/databases/read,
//                  Microsoft.Cache/redisEnterprise/databases/operationResults/read,
//                  Microsoft.Cache/locations/operationResults/read,
//                  Microsoft.Cache/locations/operationsStatus/read
//   NOT listed:    Microsoft.Cache/redisEnterprise/databases/flush/action. It is the name ARM
//                  derives from the REST path (POST .../redisEnterprise/{cluster}/databases/{db}
//                  /flush, Databases_Flush in the Microsoft.Cache redisenterprise spec, stable
//                  since 2024-10-01), but ARM refuses a custom role holding an action its
//                  provider does not publish (InvalidActionOrNotAction). Check before deploying:
//                    az provider operation show --namespace Microsoft.Cache -o json \
//                      | grep -i 'redisEnterprise/databases/flush/action'
//                  and deploy with managedRedisAccess 'builtIn' (Azure Managed Redis
//                  Contributor) if it is missing. That is why Managed Redis has its own role:
//                  the classic role never depends on it.
// RBAC compares action strings case-insensitively; they are written here as the reference does.
targetScope = 'subscription'

@description('Makes the role names unique in the tenant (role names must be).')
param roleNameSuffix string

@description('The function app identity.')
param principalId string

@description('false when main.bicep uses the built-in Redis Cache Contributor instead.')
param createFlushRole bool = true

@description('true to create the least-privilege Managed Redis role (main.bicep: managedRedisAccess is custom).')
param createManagedRedisRole bool = true

param grantOperationStatusRead bool = true

@description('Assign the read-only lister role on the subscription (selectors without a resource group).')
param grantSubscriptionListRead bool = true

var operationReads = [
  'Microsoft.Cache/locations/operationResults/read'
  'Microsoft.Cache/locations/operationsStatus/read'
]

var classicActions = [
  'Microsoft.Cache/redis/flush/action'
  'Microsoft.Cache/redis/read'
  'Microsoft.Cache/locations/operationResults/read'
  'Microsoft.Cache/locations/operationsStatus/read'
]

var managedRedisActions = [
  'Microsoft.Cache/redisEnterprise/databases/flush/action'
  'Microsoft.Cache/redisEnterprise/databases/read'
  'Microsoft.Cache/redisEnterprise/read'
  'Microsoft.Cache/redisEnterprise/databases/operationResults/read'
  'Microsoft.Cache/locations/operationResults/read'
  'Microsoft.Cache/locations/operationsStatus/read'
]

var listReads = [
  'Microsoft.Cache/redis/read'
  'Microsoft.Cache/redisEnterprise/read'
  'Microsoft.Cache/redisEnterprise/databases/read'
]

resource flushRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (createFlushRole) {
  name: guid(subscription().id, 'redisflush-flush', roleNameSuffix)
  properties: {
    roleName: 'Redis Cache Flusher (${roleNameSuffix})'
    description: 'Flush Azure Cache for Redis instances, read them and the status of that operation. Nothing else: no keys, no data, no configuration changes.'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: classicActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource managedRedisRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (createManagedRedisRole) {
  name: guid(subscription().id, 'redisflush-managed-redis-flush', roleNameSuffix)
  properties: {
    roleName: 'Managed Redis Flusher (${roleNameSuffix})'
    description: 'Flush Azure Managed Redis databases (with their geo-replication group), read clusters and databases and the status of that operation. No keys, no data, no configuration changes.'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: managedRedisActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource operationReader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantOperationStatusRead) {
  name: guid(subscription().id, 'redisflush-operation-reader', roleNameSuffix)
  properties: {
    roleName: 'Redis Cache Operation Reader (${roleNameSuffix})'
    description: 'Read the status of Microsoft.Cache asynchronous operations.'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: operationReads
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource operationReaderAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantOperationStatusRead) {
  name: guid(subscription().id, principalId, 'redisflush-operation-reader')
  properties: {
    roleDefinitionId: operationReader.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource lister 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantSubscriptionListRead) {
  name: guid(subscription().id, 'redisflush-lister', roleNameSuffix)
  properties: {
    roleName: 'Redis Cache Lister (${roleNameSuffix})'
    description: 'List and read Azure Cache for Redis caches and Azure Managed Redis clusters and databases (settings and tags, never keys), for tag selectors.'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: listReads
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource listerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantSubscriptionListRead) {
  name: guid(subscription().id, principalId, 'redisflush-lister')
  properties: {
    roleDefinitionId: lister.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output flushRoleDefinitionId string = createFlushRole ? flushRole.id : ''
output managedRedisRoleDefinitionId string = createManagedRedisRole ? managedRedisRole.id : ''
