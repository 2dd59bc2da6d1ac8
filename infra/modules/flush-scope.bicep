// One resource group whose caches the function app may flush: one role assignment per role
// main.bicep chooses, the custom `Redis Cache Flusher` and `Managed Redis Flusher` roles (or the
// built-in Redis Cache Contributor / Azure Managed Redis Contributor).
targetScope = 'resourceGroup'

param principalId string

@description('Full role definition resource ids, one assignment each.')
@minLength(1)
param roleDefinitionIds array

resource flushAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleDefinitionId in roleDefinitionIds: {
  name: guid(resourceGroup().id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]
