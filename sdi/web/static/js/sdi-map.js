/* HK SDI: Leaflet maps of the collection, items and item pages, without any external resource.
 *
 * The base map is the one setting `server.map` of the server's base.yml (sdi/publishing/basemap.py:
 * `none`, `landsd` or a block), which _base.html puts on <body> as data-sdi-map-url, -attribution and
 * -labels (an overlay of place names), with data-sdi-no-base-map (the words shown without one): that
 * is the only place a page names its base map. With none (the default) the pages work offline: features are drawn as SVG paths (points
 * as circle markers), so they show on an empty background. After drawing, the map container gets
 * data-sdi-rendered (features drawn) and data-sdi-number-returned (features received).
 */
(function (window) {
  'use strict';
  var L = window.L;
  var STYLE = {color: '#c0392b', weight: 2, opacity: 0.9, fillColor: '#e74c3c', fillOpacity: 0.25};
  var POINT = {radius: 6, color: '#ffffff', weight: 1.5, fillColor: '#c0392b', fillOpacity: 0.9};

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }

  /** The page's base map: the server's setting on <body>. */
  function baseMap() {
    var body = document.body ? document.body.dataset : {};
    return {
      url: body.sdiMapUrl || '',
      attribution: body.sdiMapAttribution || '',
      labels: body.sdiMapLabels || '',
      none: body.sdiNoBaseMap || 'No base map (offline)'
    };
  }

  function createMap(elementId, options) {
    var element = document.getElementById(elementId);
    var map = L.map(element, {attributionControl: true}).setView([22.35, 114.15], 10);  // Hong Kong
    var base = baseMap();
    if (base.url) {
      L.tileLayer(base.url, {maxZoom: 18, attribution: base.attribution}).addTo(map);
      if (base.labels) { L.tileLayer(base.labels, {maxZoom: 18}).addTo(map); }
      element.setAttribute('data-sdi-base-map', base.url);
    } else {
      map.attributionControl.setPrefix(base.none);
      element.classList.add('sdi-no-base-map');
    }
    return map;
  }

  function featureLayer(geojson, options) {
    return L.geoJSON(geojson, {
      style: function () { return STYLE; },
      pointToLayer: function (feature, latlng) { return L.circleMarker(latlng, POINT); },
      onEachFeature: function (feature, layer) {
        if (!options.itemsPath || feature.id === undefined || feature.id === null) { return; }
        var url = options.itemsPath + '/' + encodeURIComponent(feature.id) + '?f=html';
        var label = options.titleField && feature.properties ? feature.properties[options.titleField] : feature.id;
        layer.bindPopup('<a href="' + escapeHtml(url) + '">' + escapeHtml(label) + '</a>');
      }
    });
  }

  function drawFeatures(map, element, collection, options) {
    var features = collection.features || [];
    var layer = featureLayer(features, options).addTo(map);
    var bounds = layer.getBounds();
    if (bounds.isValid()) {
      map.fitBounds(bounds, {maxZoom: options.maxZoom || 16, padding: [10, 10]});
    }
    element.setAttribute('data-sdi-number-returned',
      String(collection.numberReturned !== undefined ? collection.numberReturned : features.length));
    element.setAttribute('data-sdi-rendered', String(layer.getLayers().length));
    return layer;
  }

  /** The items and item pages: the GeoJSON is embedded in the page. */
  function showFeatures(elementId, geojson, options) {
    options = options || {};
    var element = document.getElementById(elementId);
    var map = createMap(elementId, options);
    var collection = geojson.type === 'FeatureCollection' ? geojson
      : {type: 'FeatureCollection', features: Array.isArray(geojson) ? geojson : [geojson]};
    drawFeatures(map, element, collection, options);
    return map;
  }

  /** The collection page: the extent (not interactive), then a page of items fetched from the API. */
  function showCollection(elementId, bbox, options) {
    options = options || {};
    var element = document.getElementById(elementId);
    var map = createMap(elementId, options);
    if (bbox && bbox.length === 4) {
      var extent = L.rectangle([[bbox[1], bbox[0]], [bbox[3], bbox[2]]],
        {color: '#2c3e50', weight: 1, dashArray: '4 4', fill: false, interactive: false}).addTo(map);
      map.fitBounds(extent.getBounds(), {maxZoom: 12});
    }
    if (!options.itemsUrl) {
      element.setAttribute('data-sdi-rendered', '0');
      return map;
    }
    var sep = options.itemsUrl.indexOf('?') < 0 ? '?' : '&';
    fetch(options.itemsUrl + sep + 'f=json&limit=' + (options.limit || 100), {headers: {Accept: 'application/geo+json'}})
      .then(function (response) {
        if (!response.ok) { throw new Error('HTTP ' + response.status); }
        return response.json();
      })
      .then(function (collection) { drawFeatures(map, element, collection, options); })
      .catch(function (error) { element.setAttribute('data-sdi-error', String(error)); });
    return map;
  }

  window.sdiMap = {showFeatures: showFeatures, showCollection: showCollection};
})(window);
