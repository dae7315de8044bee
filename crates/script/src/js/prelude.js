// Built-in helpers available to every decoder script (ThingsBoard compatible).
// Evaluated once per context (every script has its own) as a function
// expression and called with the native UTF-8 decoder, so no helper names
// besides the public ones leak into the global scope. The public globals are
// non-writable, so a sloppy assignment cannot break them even for the script
// itself on its next call; a script that declares its own
// `function decodeToString` still shadows the global, because its body is
// wrapped in a function.
(function (nativeUtf8) {
  'use strict';

  var ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  var INDEX = new Int16Array(128).fill(-1);
  for (var i = 0; i < ALPHABET.length; i++) {
    INDEX[ALPHABET.charCodeAt(i)] = i;
  }

  function invalidCharacter(message) {
    var e = new Error(message);
    e.name = 'InvalidCharacterError';
    return e;
  }

  function toByteArray(bytes, fn) {
    if (Array.isArray(bytes)) return bytes;
    if (bytes instanceof ArrayBuffer) return Array.from(new Uint8Array(bytes));
    if (bytes != null && typeof bytes === 'object' && typeof bytes.length === 'number') {
      return Array.from(bytes);
    }
    throw new TypeError(fn + ': expected an array of bytes');
  }

  function decodeToString(bytes) {
    if (typeof bytes === 'string') return bytes;
    return nativeUtf8(toByteArray(bytes, 'decodeToString'));
  }

  function decodeToJson(bytes) {
    return JSON.parse(decodeToString(bytes));
  }

  function btoa(data) {
    if (arguments.length === 0) throw new TypeError("btoa: 1 argument required, but only 0 present");
    var s = String(data);
    var out = '';
    var n = s.length;
    for (var j = 0; j < n; j++) {
      if (s.charCodeAt(j) > 255) {
        throw invalidCharacter('btoa: the string contains characters outside of the Latin1 range');
      }
    }
    for (var k = 0; k < n; k += 3) {
      var b0 = s.charCodeAt(k);
      var b1 = k + 1 < n ? s.charCodeAt(k + 1) : 0;
      var b2 = k + 2 < n ? s.charCodeAt(k + 2) : 0;
      var triple = (b0 << 16) | (b1 << 8) | b2;
      out += ALPHABET[(triple >> 18) & 63] + ALPHABET[(triple >> 12) & 63] +
        (k + 1 < n ? ALPHABET[(triple >> 6) & 63] : '=') +
        (k + 2 < n ? ALPHABET[triple & 63] : '=');
    }
    return out;
  }

  function atob(data) {
    if (arguments.length === 0) throw new TypeError("atob: 1 argument required, but only 0 present");
    // Forgiving-base64 decode (WHATWG): strip ASCII whitespace, allow
    // missing padding, reject anything else that is not base64.
    var s = String(data).replace(/[\t\n\f\r ]+/g, '');
    if (s.length % 4 === 0) {
      if (s.endsWith('==')) s = s.slice(0, -2);
      else if (s.endsWith('=')) s = s.slice(0, -1);
    }
    if (s.length % 4 === 1) {
      throw invalidCharacter('atob: the string to be decoded is not correctly encoded');
    }
    var out = '';
    var buffer = 0;
    var bits = 0;
    for (var j = 0; j < s.length; j++) {
      var c = s.charCodeAt(j);
      var v = c < 128 ? INDEX[c] : -1;
      if (v < 0) {
        throw invalidCharacter('atob: the string to be decoded is not correctly encoded');
      }
      buffer = (buffer << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out += String.fromCharCode((buffer >> bits) & 255);
      }
    }
    return out;
  }

  var names = { decodeToString: decodeToString, decodeToJson: decodeToJson, atob: atob, btoa: btoa };
  Object.keys(names).forEach(function (name) {
    Object.defineProperty(globalThis, name, {
      value: names[name], writable: false, enumerable: false, configurable: false
    });
  });
})
