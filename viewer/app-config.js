/** @type {AppTypes.Config} */
// The OHIF Viewer's configuration for this project's DICOMweb server. `python -m viewer` serves this file in
// place of the one in @ohif/app's dist/, with the DICOMWEB_ROOT line below set to its --dicomweb-root.
// Nothing here points outside that server and the viewer's own origin: no demo servers, no analytics.
const DICOMWEB_ROOT = 'http://localhost:7071/v2';

window.config = {
  name: 'dicomweb-functions',
  routerBasename: '/',
  extensions: [],
  modes: [],
  // No onboarding tour over the first study opened in a new browser profile.
  customizationService: { 'ohif.tours': { $set: [] } },
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  // The "investigational use only" dialog would cover the study list on every first visit.
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'dicomweb',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb',
      configuration: {
        friendlyName: 'DICOMweb on Azure Functions',
        name: 'dicomweb',
        qidoRoot: DICOMWEB_ROOT,
        wadoRoot: DICOMWEB_ROOT,
        // No WADO-URI on this server: every image goes through WADO-RS frames.
        wadoUriRoot: DICOMWEB_ROOT,
        qidoSupportsIncludeField: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        supportsReject: false,
        staticWado: false,
        enableStudyLazyLoad: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        // Frames are asked for as `multipart/related; type=application/octet-stream; transfer-syntax=*`:
        // stored syntax, no transcoding. Unquoted values keep the Accept header CORS-safelisted.
        omitQuotationForMultipartRequest: true,
        // Metadata names each large binary attribute by a BulkDataURI (unless the server keeps Azure's omission):
        // the encapsulated PDF, overlays and the like are fetched from there, never by retrieving the instance.
        bulkDataURI: { enabled: true },
        // A video (H.264/HEVC instance) plays from its /rendered resource, which answers it as MP4.
        singlepart: 'video',
        dicomUploadEnabled: true,
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn('DICOMweb request failed', error.status);
  },
};
