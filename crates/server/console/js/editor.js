// The code editor: CodeMirror 5 (vendored) with the JavaScript mode and our TBEL mode.
/* global CodeMirror */

/** The gutter that holds the marker of a script problem (a compile error's line). */
const PROBLEM_GUTTER = 'cm-problem-gutter';

/** Makes a code editor in `parent`; returns `{cm, value(), setValue(), setLang(),
 * markProblem({line, column, message}), clearProblem(), onChange(f)}`. */
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
    gutters: ['CodeMirror-linenumbers', PROBLEM_GUTTER],
  });
  // The marked problem: its line handle (which follows the line while lines above are added
  // or removed) and the text mark at its column.
  let problem = null;
  const clearProblem = () => {
    if (!problem) return;
    cm.setGutterMarker(problem.handle, PROBLEM_GUTTER, null);
    cm.removeLineClass(problem.handle, 'wrap', 'cm-problem-line');
    problem.mark?.clear();
    problem = null;
  };
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
    /** Marks a 1-based `line` (and `column`, when known) with a gutter marker, a line class
     * and an underline; `message` is the marker's tooltip. One problem at a time. */
    markProblem({ line, column, message }) {
      clearProblem();
      if (!line) return;
      const index = Math.min(Math.max(line, 1), cm.lineCount()) - 1;
      const handle = cm.getLineHandle(index);
      const marker = document.createElement('span');
      marker.className = 'cm-problem-marker';
      marker.textContent = '!';
      marker.title = message || 'Problem on this line';
      marker.setAttribute('aria-label', `Problem on line ${index + 1}`);
      cm.setGutterMarker(handle, PROBLEM_GUTTER, marker);
      cm.addLineClass(handle, 'wrap', 'cm-problem-line');
      let mark = null;
      const text = cm.getLine(index);
      if (column && text.length) {
        const ch = Math.min(column - 1, text.length - 1);
        mark = cm.markText({ line: index, ch }, { line: index, ch: ch + 1 }, { className: 'cm-problem-at' });
      }
      problem = { handle, mark };
    },
    clearProblem,
    /** Puts the cursor at a 1-based line and column and focuses the editor. */
    goTo(line, column = 1) {
      cm.focus();
      cm.setCursor({ line: Math.max(line, 1) - 1, ch: Math.max(column, 1) - 1 });
      cm.scrollIntoView(null, 60);
    },
    /** Calls `f()` after every change of the text. */
    onChange(f) { cm.on('changes', () => f()); },
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
