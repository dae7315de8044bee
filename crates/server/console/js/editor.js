// The code editor: CodeMirror 5 (vendored) with the JavaScript mode and our TBEL mode.
/* global CodeMirror */

/** Makes a code editor in `parent`; returns `{cm, value(), setValue(), setLang()}`. */
export function codeEditor(parent, { value = '', lang = 'JS', height = 360, readOnly = false } = {}) {
  const cm = CodeMirror(parent, {
    value,
    mode: lang === 'TBEL' ? 'tbel' : 'javascript',
    lineNumbers: true,
    matchBrackets: true,
    indentUnit: 4,
    tabSize: 4,
    readOnly,
    viewportMargin: Infinity,
  });
  cm.setSize(null, height);
  cm.getWrapperElement().classList.add('code-editor');
  cm.getWrapperElement().dataset.lang = lang;
  setTimeout(() => cm.refresh(), 0);
  return {
    cm,
    value: () => cm.getValue(),
    setValue: (v) => cm.setValue(v),
    setLang(l) {
      cm.setOption('mode', l === 'TBEL' ? 'tbel' : 'javascript');
      cm.getWrapperElement().dataset.lang = l;
    },
  };
}

/** ThingsBoard's template decoders, for a new converter. */
export const DEFAULT_DECODER = {
  JS: `// Decode an uplink message from a buffer
// payload - array of bytes
// metadata - key/value object

/** Decoder **/

// decode payload to string
var payloadStr = decodeToString(payload);

// decode payload to JSON
// var data = decodeToJson(payload);

var deviceName = 'Device A';
var deviceType = 'thermostat';

// Result object with device attributes/telemetry data
var result = {
    deviceName: deviceName,
    deviceType: deviceType,
    attributes: {
        integrationName: metadata['integrationName'],
    },
    telemetry: {
        payload: payloadStr,
    }
};

/** Helper functions 'decodeToString' and 'decodeToJson' are already built-in **/

return result;
`,
  TBEL: `// Decode an uplink message from a buffer
// payload - array of bytes
// metadata - key/value object

/** Decoder **/

// decode payload to string
var payloadStr = decodeToString(payload);

var result = {
    deviceName: 'Device A',
    deviceType: 'thermostat',
    attributes: {
        integrationName: metadata['integrationName']
    },
    telemetry: {
        payload: payloadStr
    }
};

return result;
`,
};
