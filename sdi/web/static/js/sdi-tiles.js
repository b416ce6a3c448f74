/* HK SDI: the vector-tile preview of a collection (templates/collections/tiles/index.html), with OpenLayers
 * (static/vendor/openlayers/ol.js, the global `ol`), offline.
 *
 * Two tile matrix sets:
 * - WebMercatorQuad: EPSG:3857, OpenLayers' standard XYZ grid of 256-pixel tiles.
 * - HK80Grid: the grid of the Lands Department's HK80 XYZ base map, in EPSG:2326 (Hong Kong 1980 Grid,
 *   metres; coordinates here are [easting, northing]): top-left origin E -4786700, N 8353100, resolution
 *   156543.0339 / 2^z m per pixel for z 0-20, 256-pixel tiles. OpenLayers needs no proj4 for it: a
 *   Projection object and a TileGrid are enough, as both the view and the tiles are in EPSG:2326.
 * Every value comes from data-* attributes of the page (no inline script): on #tiles-map the zooms, the
 * bounds (CRS84), the HK80 centre and the base maps; on the options of the select named by its
 * data-select, each tile set's id and URLs. Tile URL templates are OGC's {z}/{y}/{x} (tileMatrix/tileRow/
 * tileCol; {tileMatrix}/{tileRow}/{tileCol} work too), turned into OpenLayers' tile coordinates here.
 *
 * Contract for tests: after the tiles in view have loaded and been drawn (OpenLayers' rendercomplete) the
 * map container gets data-sdi-tms (tile set id), data-sdi-tiles-loaded and data-sdi-tile-errors (tiles
 * fetched, tiles failed, so far), data-sdi-features (features drawn in the current view, counted once per
 * MVT layer and feature id when ids exist) and data-sdi-rendered="true"; they are updated after each later
 * render. A failure to set up sets data-sdi-error. window.sdiTiles = {map, pixelOf(x, y)}, where pixelOf
 * gives the map's pixel [px, py] of a coordinate in the map's projection (EPSG:3857 metres, or HK80
 * easting/northing).
 */
(function (window, document) {
  'use strict';
  var ol = window.ol;

  // The HK80 grid (see above) and a plain view of Hong Kong for collections without bounds.
  var HK80_ORIGIN = [-4786700, 8353100];
  var HK80_RESOLUTION_0 = 156543.0339;
  var HK80_MAX_ZOOM = 20;
  var HK80_SPAN = 256 * HK80_RESOLUTION_0;  // the one tile of zoom 0
  var HK80_EXTENT = [HK80_ORIGIN[0], HK80_ORIGIN[1] - HK80_SPAN, HK80_ORIGIN[0] + HK80_SPAN, HK80_ORIGIN[1]];
  var HK_LONLAT = [114.15, 22.35];
  var HK_HK80 = [833000, 826000];  // about the same place
  // Metres of HK80 easting and northing per degree of longitude and latitude around Hong Kong (from the
  // Lands Department's reference point E 835411.431 N 817266.016 = 22.294313001 N 114.168562005 E): only used
  // to size (and, without data-center-hk80, place) the first HK80 view from CRS84 bounds.
  var HK80_REF = {e: 835411.431, n: 817266.016, lon: 114.168562005, lat: 22.294313001};
  var HK80_M_PER_DEG = [103047.79, 110734.41];

  var RED = '#c0392b';
  var STYLES = null;  // made on first use, once ol.js has loaded

  function style(feature) {
    if (!STYLES) {
      STYLES = {
        point: new ol.style.Style({image: new ol.style.Circle({
          radius: 6, fill: new ol.style.Fill({color: RED}), stroke: new ol.style.Stroke({color: '#ffffff', width: 1.5})})}),
        line: new ol.style.Style({stroke: new ol.style.Stroke({color: RED, width: 2})}),
        polygon: new ol.style.Style({fill: new ol.style.Fill({color: 'rgba(231, 76, 60, 0.25)'}),
                                     stroke: new ol.style.Stroke({color: RED, width: 1.5})})
      };
    }
    var type = feature.getGeometry().getType();
    if (type === 'Point' || type === 'MultiPoint') { return STYLES.point; }
    if (type === 'LineString' || type === 'MultiLineString') { return STYLES.line; }
    return STYLES.polygon;
  }

  function numbers(text) {
    if (!text) { return null; }
    var values = text.split(',').map(Number);
    return values.every(isFinite) ? values : null;
  }

  function zoomAttr(element, name, fallback) {
    var value = parseInt(element.getAttribute(name), 10);
    return isFinite(value) ? Math.max(0, Math.min(HK80_MAX_ZOOM, value)) : fallback;
  }

  /** {z}/{y}/{x} (or {tileMatrix}/{tileRow}/{tileCol}) to a URL function of OpenLayers' [z, x, y] (y down). */
  function tileUrlFunction(template) {
    return function (tileCoord) {
      return template.replace(/\{(z|tileMatrix)\}/g, String(tileCoord[0]))
        .replace(/\{(y|tileRow)\}/g, String(tileCoord[2]))
        .replace(/\{(x|tileCol)\}/g, String(tileCoord[1]));
    };
  }

  function hk80Projection() {
    var projection = ol.proj.get('EPSG:2326');
    if (!projection) {
      projection = new ol.proj.Projection({code: 'EPSG:2326', units: 'm', extent: HK80_EXTENT});
      ol.proj.addProjection(projection);
    }
    return projection;
  }

  function hk80Resolutions(maxZoom) {
    var resolutions = [];
    for (var z = 0; z <= maxZoom; z++) { resolutions.push(HK80_RESOLUTION_0 / Math.pow(2, z)); }
    return resolutions;
  }

  function hk80Grid(minZoom, maxZoom) {
    return new ol.tilegrid.TileGrid({extent: HK80_EXTENT, origin: HK80_ORIGIN, resolutions: hk80Resolutions(maxZoom),
                                     minZoom: minZoom, tileSize: 256});
  }

  /** What differs between the two tile matrix sets: projection, tile grid, first extent, base map. */
  function gridSetup(tms, element, minZoom, maxZoom) {
    var page = document.body ? document.body.dataset : {};  // server.map, put there by _base.html
    var bounds = numbers(element.getAttribute('data-bounds'));
    if (bounds && bounds.length !== 4) { bounds = null; }
    if (tms === 'HK80Grid') {
      var centre = numbers(element.getAttribute('data-center-hk80'));
      var extent = null;
      if (bounds) {
        if (!centre || centre.length !== 2) {  // approximate, from the reference point
          centre = [HK80_REF.e + ((bounds[0] + bounds[2]) / 2 - HK80_REF.lon) * HK80_M_PER_DEG[0],
                    HK80_REF.n + ((bounds[1] + bounds[3]) / 2 - HK80_REF.lat) * HK80_M_PER_DEG[1]];
        }
        var halfWidth = (bounds[2] - bounds[0]) * HK80_M_PER_DEG[0] / 2;
        var halfHeight = (bounds[3] - bounds[1]) * HK80_M_PER_DEG[1] / 2;
        extent = [centre[0] - halfWidth, centre[1] - halfHeight, centre[0] + halfWidth, centre[1] + halfHeight];
      }
      return {
        projection: hk80Projection(),
        tileGrid: hk80Grid(minZoom, maxZoom),
        baseGrid: hk80Grid(0, HK80_MAX_ZOOM),
        viewOptions: {resolutions: hk80Resolutions(HK80_MAX_ZOOM)},
        extent: extent,
        centre: centre && centre.length === 2 ? centre : HK_HK80,
        baseUrl: element.getAttribute('data-hk80-map-url') || page.sdiHk80MapUrl || '',
        baseAttribution: element.getAttribute('data-hk80-map-attribution') || page.sdiHk80MapAttribution || '',
        labelsUrl: page.sdiHk80MapLabels || ''
      };
    }
    return {  // WebMercatorQuad
      projection: ol.proj.get('EPSG:3857'),
      tileGrid: ol.tilegrid.createXYZ({minZoom: minZoom, maxZoom: maxZoom, tileSize: 256}),
      baseGrid: undefined,
      viewOptions: {maxZoom: HK80_MAX_ZOOM},
      extent: bounds ? ol.proj.transformExtent(bounds, 'EPSG:4326', 'EPSG:3857') : null,
      centre: ol.proj.fromLonLat(HK_LONLAT),
      baseUrl: element.getAttribute('data-base-map-url') || page.sdiMapUrl || '',
      baseAttribution: element.getAttribute('data-base-map-attribution') || page.sdiMapAttribution || '',
      labelsUrl: page.sdiMapLabels || ''
    };
  }

  /** Features drawn in the current view: once per (MVT layer, feature id); each feature without an id counts. */
  function countFeatures(map, layer) {
    var extent = map.getView().calculateExtent(map.getSize());
    var seen = {};
    var count = 0;
    layer.getFeaturesInExtent(extent).forEach(function (feature) {
      var id = feature.getId();
      if (id === undefined || id === null) { count++; return; }
      var key = String(feature.get('layer')) + '\u0000' + String(id);
      if (!seen[key]) { seen[key] = true; count++; }
    });
    return count;
  }

  /** The features under a click, listed in #tiles-info (as text, never as HTML). The layer's own getFeatures
   *  (hit detection on the drawn pixels) finds points too, which map.forEachFeatureAtPixel misses on vector
   *  tile layers in OpenLayers 10.11. */
  function showInfo(layer, info, event) {
    layer.getFeatures(event.pixel).then(function (features) {
      info.textContent = features.map(function (feature) {
        var props = feature.getProperties();
        var parts = Object.keys(props).filter(function (key) { return key !== 'geometry'; })
          .map(function (key) { return key + ': ' + props[key]; });
        return (feature.getId() !== undefined ? '#' + feature.getId() + ' ' : '') + parts.join(', ');
      }).join('\n');
      info.style.whiteSpace = 'pre-line';
    });
  }

  function chooseTileset(select) {
    var params = new URLSearchParams(window.location.search);
    var wanted = params.get('tms') || params.get('scheme');
    var options = Array.prototype.slice.call(select.options);
    var option = options.filter(function (o) { return o.value === wanted; })[0] || options[0];
    select.value = option.value;
    ['metadata', 'tilejson', 'tms'].forEach(function (name) {
      var link = document.getElementById(name + '_link');
      if (link) { link.href = option.getAttribute('data-' + name); }
    });
    var code = document.getElementById('tiles_template');
    if (code) { code.textContent = option.getAttribute('data-tiles'); }
    select.addEventListener('change', function () {
      params.set('tms', select.value);
      params.delete('scheme');
      window.location.search = params.toString();
    });
    return option;
  }

  function createMap(element, option) {
    var tms = option.value;
    var minZoom = zoomAttr(element, 'data-minzoom', 0);
    var maxZoom = Math.max(minZoom, zoomAttr(element, 'data-maxzoom', HK80_MAX_ZOOM));
    var grid = gridSetup(tms, element, minZoom, maxZoom);
    var noBaseMap = element.getAttribute('data-no-base-map') || 'No base map (offline)';
    var layers = [];
    if (grid.baseUrl) {
      layers.push(new ol.layer.Tile({source: new ol.source.XYZ({
        url: grid.baseUrl.replace('{s}', '{a-c}'), projection: grid.projection, tileGrid: grid.baseGrid,
        attributions: grid.baseAttribution || undefined})}));
      if (grid.labelsUrl) {
        layers.push(new ol.layer.Tile({source: new ol.source.XYZ({
          url: grid.labelsUrl.replace('{s}', '{a-c}'), projection: grid.projection, tileGrid: grid.baseGrid})}));
      }
    } else {
      element.classList.add('sdi-no-base-map');
    }
    var source = new ol.source.VectorTile({
      format: new ol.format.MVT(),
      projection: grid.projection,
      tileGrid: grid.tileGrid,
      tileUrlFunction: tileUrlFunction(option.getAttribute('data-tiles')),
      attributions: grid.baseUrl ? undefined : noBaseMap
    });
    var layer = new ol.layer.VectorTile({source: source, style: style, declutter: false});
    layers.push(layer);

    var view = new ol.View(Object.assign({projection: grid.projection, center: grid.centre, zoom: 11,
                                          minZoom: minZoom, constrainResolution: true}, grid.viewOptions));
    var map = new ol.Map({
      target: element,
      layers: layers,
      view: view,
      controls: ol.control.defaults.defaults({attributionOptions: {collapsible: false}})
    });
    if (grid.extent) {
      view.fit(grid.extent, {size: map.getSize(), padding: [20, 20, 20, 20], maxZoom: Math.min(18, HK80_MAX_ZOOM)});
    }

    var loaded = 0;
    var errors = 0;
    source.on('tileloadend', function () { loaded++; });
    source.on('tileloaderror', function () { errors++; });
    map.on('rendercomplete', function () {
      element.setAttribute('data-sdi-tms', tms);
      element.setAttribute('data-sdi-tiles-loaded', String(loaded));
      element.setAttribute('data-sdi-tile-errors', String(errors));
      element.setAttribute('data-sdi-features', String(countFeatures(map, layer)));
      element.setAttribute('data-sdi-rendered', 'true');
    });
    var info = document.getElementById('tiles-info');
    if (info) { map.on('singleclick', function (event) { showInfo(layer, info, event); }); }
    return map;
  }

  function start() {
    var element = document.getElementById('tiles-map');
    if (!element) { return; }
    var select = document.getElementById(element.getAttribute('data-select') || 'tilingScheme');
    if (!ol) { element.setAttribute('data-sdi-error', 'OpenLayers (ol.js) did not load'); return; }
    if (!select || !select.options.length) { element.setAttribute('data-sdi-error', 'no tile set'); return; }
    try {
      var map = createMap(element, chooseTileset(select));
      window.sdiTiles = {
        map: map,
        pixelOf: function (x, y) { return map.getPixelFromCoordinate([x, y]); }
      };
    } catch (error) {
      element.setAttribute('data-sdi-error', String(error));
      throw error;
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})(window, document);
