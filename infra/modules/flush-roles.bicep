// Subscription-level part of the flush permissions (deployed by main.bicep as a module with
// scope: subscription()).
//
// - `Redis Cache Flusher`: only Microsoft.Cache/redis/flush/action (+ the operation reads, so
//   one assignment on a resource group is enough where ARM authorizes those there too). It is
//   assigned per resource group by flush-scope.bicep, never here.
// - `Redis Cache Operation Reader`: only the operation-status reads. ARM's operation URLs
//   (`/subscriptions/{sub}/providers/Microsoft.Cache/locations/{region}/operationresults/{id}`,
//   from both the Azure-AsyncOperation and the Location header) sit at subscription level, so a
//   resource-group assignment does not cover them: this one is assigned on the subscription.
//   Reading operation statuses reveals no cache data and changes nothing.
targetScope = 'subscription'

@description('Makes the role names unique in the tenant (role names must be).')
param roleNameSuffix string

@description('The function app identity.')
param principalId string

@description('false when main.bicep uses the built-in Redis Cache Contributor instead.')
param createFlushRole bool = true

param grantOperationStatusRead bool = true

var operationReads = [
  'Microsoft.Cache/locations/operationresults/read'
  'Microsoft.Cache/locations/operationsStatus/read'
]

resource flushRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (createFlushRole) {
  name: guid(subscription().id, 'redisflush-flush', roleNameSuffix)
  properties: {
    roleName: 'Redis Cache Flusher (${roleNameSuffix})'
    description: 'Flush Azure Cache for Redis instances and read the status of that operation. Nothing else: no keys, no data, no configuration.'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.Cache/redis/flush/action'
          'Microsoft.Cache/locations/operationresults/read'
          'Microsoft.Cache/locations/operationsStatus/read'
        ]
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

output flushRoleDefinitionId string = createFlushRole ? flushRole.id : ''
