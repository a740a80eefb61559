// The DIMSE gateway (dimse_gateway/Dockerfile) as an Azure Container App with TCP ingress, on the Function App's
// storage with the same user-assigned managed identity. docs/dimse.md has its settings.
param location string
param tags object
param name string
param environmentName string
@description('The gateway image, built from dimse_gateway/Dockerfile and pushed to a registry the app can pull from.')
param image string
param identityId string
param identityClientId string
param blobEndpoint string
param tableEndpoint string
param blobContainer string
param metadataContainer string
param tablePrefix string
@description('The gateway\'s AE title (DICOMWEB_DIMSE_AE_TITLE).')
param aeTitle string = 'DICOMWEB'
@description('The TCP port the ingress exposes and the gateway listens on.')
param port int = 11112
@description('Calling AE titles accepted, comma-separated (empty: any).')
param allowedCallingAeTitles string = ''
@description('C-MOVE destinations and storage commitment report addresses: AE=host:port, comma-separated.')
param moveDestinations string = ''
@description('A subnet (delegated to Microsoft.App/environments) for the environment; empty: Azure\'s own network.')
param infrastructureSubnetId string = ''
@description('Client IP ranges (CIDR) allowed through the ingress; empty: any.')
param allowedIpRanges array = []

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    vnetConfiguration: empty(infrastructureSubnetId) ? null : {
      infrastructureSubnetId: infrastructureSubnetId
      internal: false
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

resource gateway 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        transport: 'tcp'
        targetPort: port
        exposedPort: port
        ipSecurityRestrictions: [for (range, index) in allowedIpRanges: {
          name: 'allowed-${index}'
          action: 'Allow'
          ipAddressRange: range
        }]
      }
    }
    template: {
      containers: [
        {
          name: 'dimse-gateway'
          image: image
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
          env: [
            { name: 'AZURE_CLIENT_ID', value: identityClientId }
            { name: 'DICOMWEB_BLOB_ACCOUNT_URL', value: blobEndpoint }
            { name: 'DICOMWEB_TABLE_ACCOUNT_URL', value: tableEndpoint }
            { name: 'DICOMWEB_BLOB_CONTAINER', value: blobContainer }
            { name: 'DICOMWEB_METADATA_CONTAINER', value: metadataContainer }
            { name: 'DICOMWEB_TABLE_PREFIX', value: tablePrefix }
            { name: 'DICOMWEB_DIMSE_AE_TITLE', value: aeTitle }
            { name: 'DICOMWEB_DIMSE_PORT', value: string(port) }
            { name: 'DICOMWEB_DIMSE_ALLOWED_CALLING_AE_TITLES', value: allowedCallingAeTitles }
            { name: 'DICOMWEB_DIMSE_MOVE_DESTINATIONS', value: moveDestinations }
          ]
          probes: [
            {
              type: 'Liveness'
              tcpSocket: { port: port }
              periodSeconds: 30
            }
            {
              // A probe's connection closes at once, and so frees the association slot it took (pdu_limit.py).
              type: 'Readiness'
              tcpSocket: { port: port }
              periodSeconds: 10
            }
          ]
        }
      ]
      // One replica: C-MOVE destinations and storage commitment reports need no affinity, but a modality's
      // association stays on the replica that accepted it; raise maxReplicas for more associations at once.
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
    }
  }
}

@description('The address modalities call: this host, on the port above.')
output fqdn string = gateway.properties.configuration.ingress.fqdn
