// One resource group whose caches the function app may flush: a single role assignment,
// the custom `Redis Cache Flusher` role (or the built-in Redis Cache Contributor).
targetScope = 'resourceGroup'

param principalId string

@description('Full role definition resource id.')
param roleDefinitionId string

resource flushAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
