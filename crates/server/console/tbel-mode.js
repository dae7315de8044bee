// A CodeMirror mode for TBEL (ThingsBoard Expression Language, MVEL-based): JavaScript's
// tokenizer with TBEL's own keywords (`def`, `foreach`, `until`, `with`, …) highlighted too.
/* global CodeMirror */
(function () {
  'use strict';
  var extra = ['def', 'foreach', 'until', 'with', 'is', 'empty', 'nil', 'null', 'contains', 'soundslike', 'strsim'];
  CodeMirror.defineMode('tbel', function (config) {
    var js = CodeMirror.getMode(config, { name: 'javascript' });
    return {
      startState: js.startState,
      copyState: js.copyState,
      indent: js.indent,
      electricInput: js.electricInput,
      blockCommentStart: '/*', blockCommentEnd: '*/', lineComment: '//',
      fold: 'brace', closeBrackets: js.closeBrackets,
      token: function (stream, state) {
        var style = js.token(stream, state);
        if (style === 'variable' || style === 'variable-2' || style === 'def') {
          if (extra.indexOf(stream.current()) >= 0) return 'keyword';
        }
        return style;
      },
    };
  });
  CodeMirror.defineMIME('text/x-tbel', 'tbel');
})();
